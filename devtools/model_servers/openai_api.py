"""OpenAI-compatible `/v1/chat/completions` and `/v1/completions`, streamed or not.

Streaming follows what vLLM does on the wire, because that is what a proxy in
front of it sees: response headers leave at once (unless `defer_headers`),
nothing is written to the body until the first token is ready (the role chunk
and the first token leave together), then one Server-Sent Event per token,
then a chunk with `finish_reason` and `usage`, then `data: [DONE]`. With
`stream_options.include_usage` an extra usage-only chunk (`choices: []`)
precedes `[DONE]`, as OpenAI specifies.

Token counts a proxy can log: a non-streamed answer carries `x-prompt-tokens`
and `x-output-tokens` headers (the whole completion exists before the headers
leave). A streamed answer's count exists only after its last token, and
uvicorn (HTTP/1.1) cannot send trailers, so it is only in the body's final
chunk: an access log cannot see it (body byte counts and timings it can).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devtools.model_servers.behaviour import Behaviour, Plan
from devtools.model_servers.model import TokenGenerator, count_prompt_tokens
from devtools.model_servers.oip_rest import json_response

MAX_TOKENS = 4096


class BadRequest(ValueError):
    pass


def openai_error(status: int, message: str, kind: str, headers: dict[str, str]) -> Response:
    return json_response(status, {"error": {"message": message, "type": kind, "param": None, "code": status}}, headers)


def _prompt_of_chat(body: dict) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    parts = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise BadRequest("each message needs a role and content")
        content = m.get("content") or ""
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(str(content))
    return "\n".join(parts)


def _prompt_of_completion(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string (or a list of strings)")
    return prompt


def _length(body: dict, default: int) -> tuple[int, bool]:
    """(tokens to emit, whether the request capped it: finish_reason "length" rather than "stop")."""
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    if asked is None:
        return default, False
    if not isinstance(asked, int) or isinstance(asked, bool) or not 1 <= asked <= MAX_TOKENS:
        raise BadRequest(f"max_tokens must be an integer within [1, {MAX_TOKENS}]")
    return asked, True


class _Style:
    """How one endpoint shapes its chunks and its full answer."""

    def __init__(self, kind: str, chat: bool) -> None:
        self.kind, self.chat = kind, chat
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.full_object = "chat.completion" if chat else "text_completion"
        self.id_prefix = "chatcmpl-" if chat else "cmpl-"

    def choice_delta(self, text: str | None, first: bool, finish: str | None) -> dict:
        if self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    def choice_full(self, text: str, finish: str) -> dict:
        if self.chat:
            return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def routes(behaviour: Behaviour) -> list[Route]:
    b = behaviour

    def endpoint(style: _Style, prompt_of: Callable[[dict], str]):
        async def handle(request: Request) -> Response:
            plan = b.admit(style.kind)
            k = plan.knobs
            headers = {"x-model-name": k.model_name, "x-model-version": k.model_version}

            def fail(status: int, message: str, kind: str) -> Response:
                b.finish(style.kind, status, False)
                return openai_error(status, message, kind, headers)

            raw = await request.body()
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise BadRequest("body must be a JSON object")
                prompt = prompt_of(body)
                n, capped = _length(body, k.tokens)
            except (BadRequest, ValueError) as err:
                return fail(400, str(err), "invalid_request_error")
            model = body.get("model") or k.model_name
            if model != k.model_name:
                return fail(404, f"The model `{model}` does not exist.", "NotFoundError")
            if not b.model_ready:
                return fail(503, f"model {model!r} is not ready", "server_error")
            tokens = TokenGenerator(k.seed).tokens(prompt, n)
            usage = {"prompt_tokens": count_prompt_tokens(prompt), "completion_tokens": n,
                     "total_tokens": count_prompt_tokens(prompt) + n}
            finish = "length" if capped else "stop"
            meta = {"id": style.id_prefix + uuid.uuid4().hex[:24], "created": int(time.time()),
                    "model": k.model_name, "system_fingerprint": k.model_version}

            if plan.fail:
                async with b.limiter.slot():
                    if plan.ttfc_s > 0:
                        await asyncio.sleep(plan.ttfc_s)
                return fail(k.error_status, "injected error", "server_error")

            if not body.get("stream"):
                async with b.limiter.slot():
                    delay = plan.ttfc_s + (n - 1) * plan.token_s
                    if delay > 0:
                        await asyncio.sleep(delay)
                b.finish(style.kind, 200, True, tokens=n)
                full = {**meta, "object": style.full_object, "choices": [style.choice_full("".join(tokens), finish)],
                        "usage": usage}
                headers |= {"x-prompt-tokens": str(usage["prompt_tokens"]), "x-output-tokens": str(n)}
                return json_response(200, full, headers)

            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stream = _stream(b, style, plan, tokens, meta, usage, finish, include_usage)
            sse_headers = headers | {"cache-control": "no-cache"}
            if k.defer_headers:
                try:
                    first = await anext(stream)
                except BaseException:
                    await stream.aclose()
                    raise
                stream = _prepend(first, stream)
            return StreamingResponse(stream, media_type="text/event-stream", headers=sse_headers)

        return handle

    chat = _Style("chat", chat=True)
    completion = _Style("completion", chat=False)

    async def list_models(request: Request) -> Response:
        k = b.knobs
        return json_response(200, {"object": "list", "data": [
            {"id": k.model_name, "object": "model", "created": int(b.started_unix), "owned_by": "weir-demo"}]})

    return [
        Route("/v1/chat/completions", endpoint(chat, _prompt_of_chat), methods=["POST"]),
        Route("/v1/completions", endpoint(completion, _prompt_of_completion), methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]


async def _stream(b: Behaviour, style: _Style, plan: Plan, tokens: list[str], meta: dict, usage: dict,
                  finish: str, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body; holds a serving slot from before the first token until after the last."""
    status: int = 499  # nginx's "client closed request": the stream was cut before its end
    try:
        async with b.limiter.slot():
            for i, token in enumerate(tokens):
                delay = plan.ttfc_s if i == 0 else plan.token_s
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = {**meta, "object": style.chunk_object, "choices": [style.choice_delta(token, False, None)]}
                if i == 0 and style.chat:  # the role chunk leaves with the first token, as in vLLM
                    role = {**meta, "object": style.chunk_object, "choices": [style.choice_delta("", True, None)]}
                    data = _sse(role) + _sse(chunk)
                else:
                    data = _sse(chunk)
                yield data
                b.add_tokens(style.kind, 1)
            last = {**meta, "object": style.chunk_object, "choices": [style.choice_delta(None, False, finish)],
                    "usage": usage}
            tail = _sse(last)
            if include_usage:
                tail += _sse({**meta, "object": style.chunk_object, "choices": [], "usage": usage})
            yield tail + b"data: [DONE]\n\n"
            status = 200
    finally:
        b.finish(style.kind, status, status == 200)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
