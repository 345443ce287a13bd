"""Rendering a chat template: the Jinja string a model's `tokenizer_config.json` holds as `chat_template`.

A template turns a conversation (a list of `{"role", "content"}` messages)
into the one string the model was trained on. It is rendered the way
Hugging Face tokenizers render it, so the same messages give the same text:
a sandboxed Jinja environment with `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension (`{% break %}`, `{% continue %}`), a
`raise_exception(message)` global, a `tojson` filter that keeps non-ASCII
characters, `strftime_now(format)`, the special tokens as `bos_token`,
`eos_token`, ... and `add_generation_prompt`. `{% generation %}` blocks
(which mark assistant text for masks in some templates) render their body.
"""

import datetime
import functools
import json

from backbones.errors import BackboneLabError


class ChatTemplateError(BackboneLabError, ValueError):
    """A chat template that does not compile, raises on these messages, or is missing."""


def render(template, messages, add_generation_prompt=False, special_tokens=None, **extra):
    """The text of `messages` under the Jinja `template`.

    Args:
        template: str. The `chat_template` string.
        messages: list of dict. `{"role": ..., "content": ...}` each.
        add_generation_prompt: bool. End with the header that starts the
            assistant's reply (for generation).
        special_tokens: dict. Role (`bos`, `eos`, ...) to token string,
            passed as `bos_token`, `eos_token`, ...
        **extra: more template variables (`tools`, `date_string`, ...).

    Example:
    >>> chatml = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    ...           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    >>> render(chatml, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    variables = {f"{role}_token": token for role, token in (special_tokens or {}).items()}
    variables.update(extra)
    try:
        compiled = compile_template(template)
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
    except ChatTemplateError:
        raise
    except Exception as e:  # jinja2's undefined / type errors from inside the template
        raise ChatTemplateError(f"The chat template failed on these messages: {type(e).__name__}: {e}") from e


@functools.lru_cache(maxsize=16)
def compile_template(template):
    """The compiled Jinja template (cached); `ChatTemplateError` if it is not valid Jinja."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: rendered as its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"The chat template is not valid Jinja (line {e.lineno}: {e.message}).") from None


def _raise(message):
    raise ChatTemplateError(f"The chat template refused these messages: {message}")


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters and ASCII-encodes; templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# sharegpt's `from` values -> the roles templates expect.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system", "tool": "tool"}


def normalize_messages(messages, where="messages"):
    """`[{"role", "content"}, ...]` from OpenAI-style messages or sharegpt's
    `{"from": "human" | "gpt" | "system", "value": ...}` turns.

    Raises `ChatTemplateError` naming `where` when a turn has neither form.

    Example:
    >>> normalize_messages([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}])
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatTemplateError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}.")
    out = []
    for i, turn in enumerate(messages):
        if isinstance(turn, dict) and "role" in turn and "content" in turn:
            out.append({**turn, "role": str(turn["role"]), "content": "" if turn["content"] is None
                        else turn["content"]})
        elif isinstance(turn, dict) and "from" in turn and "value" in turn:
            role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                raise ChatTemplateError(f"{where}, turn {i}: unknown sharegpt role from={turn['from']!r}; "
                                        f"expected one of {sorted(SHAREGPT_ROLES)}.")
            out.append({"role": role, "content": "" if turn["value"] is None else str(turn["value"])})
        else:
            raise ChatTemplateError(f"{where}, turn {i}: expected {{'role', 'content'}} or sharegpt's "
                                    f"{{'from', 'value'}}, got {turn!r:.80}.")
    return out
