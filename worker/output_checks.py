"""What every job's images go through once generated, made once per pipeline: the identity judge
that scores them (``worker.face.judge``) and the safety check that screens them
(``worker.safety.screen``; None when the operator turned it off).

Example::

    checks = OutputChecks.load(pipeline.face_analyzer, settings)
    checks.describe()   # {"identity_judge": "dlib-resnet", "identity_judge_independent": True,
                        #  "safety_check": "nudenet-320n"}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.face.judge import IdentityJudge, identity_judge
from worker.safety.screen import SafetyCheck, load_safety_check, safety_label


@dataclass
class OutputChecks:
    judge: IdentityJudge
    safety: SafetyCheck | None

    @classmethod
    def load(cls, face_analyzer: Any, settings: Any) -> OutputChecks:
        return cls(identity_judge(face_analyzer), load_safety_check(settings))

    @classmethod
    def of(cls, pipeline: Any) -> OutputChecks:
        """``pipeline.checks``, made here when ``load_models`` did not make them (a pipeline handed
        its engine and analyzer directly, as some tests and tools do)."""
        if pipeline.checks is None:
            pipeline.checks = cls.load(pipeline.face_analyzer, pipeline.settings)
        return pipeline.checks

    def describe(self) -> dict[str, Any]:
        """What the result says about how its images were judged and screened."""
        return {**self.judge.describe(), "safety_check": safety_label(self.safety)}
