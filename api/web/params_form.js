// The parameter fields, drawn from the JSON schema that GET /api/v1/info returns (the ranges and
// choices of shared/params.py): nothing about a parameter is written twice.
"use strict";

const ParamsForm = (() => {
  const GROUPS = {
    "body-fields": ["body_type", "gender", "height_cm", "weight_kg", "pose", "clothing", "ethnicity", "skin_tone"],
    "image-fields": ["base_model", "mode", "num_images", "size", "style", "scene", "output_format", "output_quality"],
  };
  // width and height are offered together, as the size choice
  const SIZE_FIELDS = ["width", "height"];

  // `int | None` comes as anyOf [{type: integer, ...}, {type: null}]: the non-null branch, marked optional
  function unwrap(prop) {
    if (!prop.anyOf) return prop;
    const branch = prop.anyOf.find((p) => p.type !== "null") || {};
    return { ...branch, title: prop.title, description: prop.description, default: prop.default, optional: true };
  }

  function labelled(name, title, control, hint) {
    const wrap = document.createElement("div");
    wrap.className = "field";
    wrap.dataset.field = name;
    const label = document.createElement("label");
    label.htmlFor = control.id;
    label.textContent = title;
    wrap.append(label, control);
    if (hint) {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = hint;
      wrap.append(p);
    }
    return wrap;
  }

  function control(name, prop) {
    let el;
    if (prop.enum) {
      el = document.createElement("select");
      for (const value of prop.enum) el.add(new Option(value, value, false, value === prop.default));
    } else if (prop.type === "boolean") {
      el = document.createElement("input");
      el.type = "checkbox";
      el.checked = Boolean(prop.default);
    } else if (prop.type === "integer" || prop.type === "number") {
      el = document.createElement("input");
      el.type = "number";
      el.inputMode = prop.type === "integer" ? "numeric" : "decimal";
      if (prop.minimum !== undefined) el.min = prop.minimum;
      if (prop.maximum !== undefined) el.max = prop.maximum;
      el.step = prop.multipleOf || (prop.type === "integer" ? 1 : "any");
      if (prop.default !== null && prop.default !== undefined) el.value = prop.default;
      else el.placeholder = "default";
    } else {
      el = document.createElement("input");
      el.type = "text";
      if (prop.maxLength) el.maxLength = prop.maxLength;
      if (prop.default) el.value = prop.default;
      else el.placeholder = "optional";
    }
    el.id = `param-${name}`;
    el.name = name;
    return el;
  }

  function sizeControl(info) {
    const el = document.createElement("select");
    el.id = "param-size";
    el.name = "size";
    const seen = new Set();
    for (const size of [info.default_size, ...info.size_presets]) {
      const key = `${size.width}x${size.height}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const isDefault = seen.size === 1;
      el.add(new Option(`${size.width} × ${size.height}${isDefault ? " (default)" : ""}`, key, isDefault, isDefault));
    }
    return el;
  }

  // The base checkpoints the workers offer (info.base_models), the default preselected.
  function baseControl(bases) {
    const el = document.createElement("select");
    el.id = "param-base_model";
    el.name = "base_model";
    for (const base of bases) {
      const label = `${base.name}${base.default ? " (default)" : ""}`;
      el.add(new Option(label, base.name, base.default, base.default));
    }
    return el;
  }

  // Draw every parameter of info.params into its group; unknown ones go to "More settings".
  // base_model is a choice only where there is one: a select when the workers offer several bases.
  function render(info) {
    const props = info.params.properties;
    const placed = new Set(SIZE_FIELDS);
    for (const [groupId, names] of Object.entries(GROUPS)) {
      const group = document.getElementById(groupId);
      group.replaceChildren();
      for (const name of names) {
        if (name === "size") {
          group.append(labelled("size", "Size (width × height)", sizeControl(info), "Output pixels per image."));
          continue;
        }
        if (!props[name]) continue;
        const prop = unwrap(props[name]);
        if (name === "base_model") {
          const bases = info.base_models || [];
          if (bases.length > 1) group.append(labelled(name, prop.title, baseControl(bases), prop.description));
          placed.add(name);
          continue;
        }
        group.append(labelled(name, prop.title || name, control(name, prop), prop.description));
        placed.add(name);
      }
    }
    const advanced = document.getElementById("advanced-fields");
    advanced.replaceChildren();
    for (const [name, raw] of Object.entries(props)) {
      if (placed.has(name)) continue;
      const prop = unwrap(raw);
      advanced.append(labelled(name, prop.title || name, control(name, prop), prop.description));
    }
  }

  // The form's values as multipart fields; empty optional fields are left out (server defaults).
  function appendTo(form, data) {
    for (const el of form.querySelectorAll("[id^=param-]")) {
      if (el.name === "size") {
        const [width, height] = el.value.split("x");
        data.append("width", width);
        data.append("height", height);
      } else if (el.type === "checkbox") {
        data.append(el.name, el.checked ? "true" : "false");
      } else if (el.value.trim() !== "") {
        data.append(el.name, el.value.trim());
      }
    }
    return data;
  }

  // An error names a field ("height_cm", "face_image", or one of several photos: "face_image[2]",
  // which marks that photo and the photos' section).
  function markInvalid(field) {
    for (const el of document.querySelectorAll("[data-field].invalid")) el.classList.remove("invalid");
    for (const name of field ? new Set([field, field.replace(/\[\d+\]$/, "")]) : []) {
      const wrap = document.querySelector(`[data-field="${name}"]`);
      if (wrap) wrap.classList.add("invalid");
    }
  }

  return { render, appendTo, markInvalid };
})();
