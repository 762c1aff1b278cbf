"""The Casbin model file: the bundled one, and the check that a custom one fits Warden."""

from importlib.resources import files

from casbin.model import Model

REQUEST_FIELDS = ["r_sub", "r_dom", "r_obj", "r_act", "r_wf"]
POLICY_FIELDS = ["p_sub", "p_dom", "p_obj", "p_act", "p_wf", "p_eft"]


def bundled_model_text() -> str:
    """Return the text of the model DESIGN.md specifies, shipped as authz/model.conf."""
    return files("authz").joinpath("model.conf").read_text(encoding="utf-8")


def _sections(text: str) -> dict:
    model = Model()
    model.load_model_from_text(text)
    return {sec: {key: assertion.value for key, assertion in model.model.get(sec, {}).items()}
            for sec in ("r", "p", "g", "e", "m")}


def check_model(text: str) -> None:
    """Raise ValueError unless `text` is a Casbin model with Warden's request and policy shape."""
    try:
        model = Model()
        model.load_model_from_text(text)
    except Exception as exc:
        raise ValueError(f"not a Casbin model: {exc}") from exc
    request = model.model.get("r", {}).get("r")
    policy = model.model.get("p", {}).get("p")
    if request is None or list(request.tokens) != REQUEST_FIELDS:
        raise ValueError("the model's request must be `r = sub, dom, obj, act, wf`")
    if policy is None or list(policy.tokens) != POLICY_FIELDS:
        raise ValueError("the model's policy must be `p = sub, dom, obj, act, wf, eft`")


def is_bundled_model(text: str) -> bool:
    """True when `text` means the same model as the bundled one (layout and comments aside)."""
    return _sections(text) == _sections(bundled_model_text())
