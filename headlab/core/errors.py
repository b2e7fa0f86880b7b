"""One error type for bad input: the CLI prints its message as one line and exits non-zero."""


class HeadlabError(Exception):
    """Bad input or an unsupported model. The message names the file, line and field when there is one."""


def where(path: object, line: int | None = None, field: object = None) -> str:
    """Format a location as `path:line: field` for error messages (a YAML key may be a number: any field is
    shown as text)."""
    loc = str(path)
    field = None if field is None else str(field)
    if line is not None:
        loc += f":{line}"
    if field is not None:  # a field name from a user's file may hold newlines: keep the message one line
        loc += f": field '{field.encode('unicode_escape').decode('ascii') if not field.isprintable() else field}'"
    return loc


def check_fields(what: str, obj: object, rules: list[tuple[str, bool, str]], prefix: str = "") -> None:
    """Raise for the first (field, ok, wanted) rule that fails: "<what>: field 'x' must be <wanted> (got v)".

    `prefix` names settings nested in another's ("finetune." gives field 'finetune.x')."""
    for name, ok, wanted in rules:
        if not ok:
            raise HeadlabError(f"{where(what, None, prefix + name)} must be {wanted} (got {getattr(obj, name)!r})")
