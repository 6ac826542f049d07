"""A job's face photos: one to ``MAX_FACE_IMAGES`` of one person, sent as the multipart field
``face_image`` repeated. The gateway checks each one, the worker analyses each one; an error
about one of several photos names it, the same way on both sides: the field ``face_image[2]``
(1-based, in the order sent) and a message that starts "Photo 2 of 3: ". With a single photo
nothing changes: the field is ``face_image`` and the message is the one-photo message.

Example::

    try:
        check(photo)
    except IdentityBodyError as exc:
        raise about_photo(exc, index=1, count=3) from None   # field face_image[2], "Photo 2 of 3: ..."
"""

from __future__ import annotations

from shared.errors import ErrorCode, IdentityBodyError

FIELD = "face_image"
# several references average out one photo's angle or light; past a handful they add little and
# each costs a face analysis on the worker and up to max_upload_bytes of the request
MAX_FACE_IMAGES = 5


def photo_field(index: int, count: int) -> str:
    """The field name that points at photo ``index`` (0-based) of ``count``.

    Example::

        photo_field(1, 3)   # "face_image[2]"
        photo_field(0, 1)   # "face_image"
    """
    return FIELD if count == 1 else f"{FIELD}[{index + 1}]"


def photo_label(index: int, count: int) -> str:
    """How a message names photo ``index`` (0-based) of ``count``: "Photo 2 of 3"."""
    return f"Photo {index + 1} of {count}"


def about_photo(error: IdentityBodyError, index: int, count: int) -> IdentityBodyError:
    """``error`` (raised about "the photo") as an error about photo ``index`` of ``count``; with a
    single photo, ``error`` itself."""
    if count == 1:
        return error
    return IdentityBodyError(error.code, f"{photo_label(index, count)}: {error.message}",
                             field=photo_field(index, count), **error.details)


def check_count(count: int) -> None:
    """Refuse a form with no face photo or more than ``MAX_FACE_IMAGES``."""
    if count == 0:
        raise IdentityBodyError(ErrorCode.MISSING_FIELD,
                                "Send the face photo as the multipart file field 'face_image'.", field=FIELD)
    if count > MAX_FACE_IMAGES:
        raise IdentityBodyError(
            ErrorCode.TOO_MANY_FACE_IMAGES,
            f"{count} face photos were sent; send 1 to {MAX_FACE_IMAGES} photos of the same person "
            f"(repeat the field 'face_image'), keeping the clearest, most frontal ones.",
            field=FIELD, max_face_images=MAX_FACE_IMAGES)
