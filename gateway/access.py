"""Who may call what, and how much of it: a key's principal, the models its project was
granted, the size limits of one request, and admission (gateway/admission.py) before any work.
"""

from __future__ import annotations

from config.gateway import GatewaySettings
from gateway.accounting import Outcome
from gateway.admission import Admission
from gateway.credentials import bearer_token
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GatewayError,
    model_not_found,
    valid_name,
)
from gateway.tenancy import Principal, Tenancy
from gateway.upstream import ReplicaPool


class Access:
    def __init__(self, settings: GatewaySettings, tenancy: Tenancy, admission: Admission,
                 pool: ReplicaPool) -> None:
        self.settings, self.tenancy, self.admission, self.pool = (
            settings, tenancy, admission, pool)

    def authenticate(self, authorization: str | None, address: str,
                     outcome: Outcome) -> Principal:
        """The key's principal; failures count against the client address, and an address
        over its limit is refused before its key is even looked at."""
        self.admission.check_address(address)
        token = bearer_token(authorization)
        if token is None:
            self.admission.failed_authentication(address)
            raise GatewayError(401, "Missing API key: send 'Authorization: Bearer <key>'.",
                               "authentication_error", "missing_api_key")
        principal = self.tenancy.authenticate(token)
        if principal is None:
            self.admission.failed_authentication(address)
            raise GatewayError(401, "Invalid or revoked API key.", "authentication_error",
                               "invalid_api_key")
        outcome.principal = principal
        return principal

    def admit(self, principal: Principal, outcome: Outcome) -> None:
        """Count the request and take an in-flight slot, before its body is read."""
        self.admission.count_request(principal)
        outcome.ticket = self.admission.enter(principal)

    async def visible_models(self, principal: Principal) -> list[str]:
        served = await self.pool.served()
        granted = self.tenancy.granted(principal.project_id)
        # a granted model not listed may have been promoted since the last probe (the Studio's
        # "Open in playground" comes seconds after): one fresh look, at most once a second
        missing = sorted(m for m in granted - set(served)
                         if m != self.settings.embedding_model_name)
        if missing:
            served = await self.pool.served(expecting=missing[0])
        names = {m for m in served if m in granted}
        if self.settings.embedding_model_name in granted:
            names.add(self.settings.embedding_model_name)
        return sorted(names)

    async def authorise_model(self, principal: Principal, model: str) -> None:
        if not valid_name(model):
            raise model_not_found(model)
        if model not in self.tenancy.granted(principal.project_id):
            raise model_not_found(model)
        if (model != self.settings.embedding_model_name
                and model not in await self.pool.served(expecting=model)):
            raise model_not_found(model)

    def model_type(self, model: str) -> str:
        """'chat', 'embedding' or 'speech': which routes a model answers."""
        if model == self.settings.embedding_model_name:
            return "embedding"
        return "speech" if model in self.settings.speech.models else "chat"

    def require_generative(self, model: str, param: str = "model") -> None:
        """The embedding and speech models are granted like any other but write no chat: say so
        with a 400, not the engine's error or the 503 of 'no replica serves it'."""
        kind = self.model_type(model)
        if kind != "chat":
            route = "/v1/embeddings" if kind == "embedding" else "/v1/audio/transcriptions"
            article = "an" if kind == "embedding" else "a"
            raise GatewayError(400, f"'{model}' is {article} {kind} model: it answers {route}, not "
                                    "chats or completions.", "invalid_request_error",
                               "not_a_generative_model", param)

    @staticmethod
    def require_inference(principal: Principal) -> None:
        if not principal.can_infer:
            raise GatewayError(403, f"Role '{principal.role}' may list models and read usage "
                                    "but not run inference.", "permission_error",
                               "insufficient_role")

    def reserve(self, principal: Principal, prompt_tokens: int, completion_tokens: int,
                outcome: Outcome) -> None:
        self.admission.reserve(principal, prompt_tokens + completion_tokens)
        outcome.reserved = prompt_tokens + completion_tokens
        outcome.prompt_estimate = prompt_tokens

    def check_limits(self, prompt_chars: int, messages: int = 0) -> None:
        limits = self.settings.limits
        if messages > limits.max_messages:
            raise GatewayError(400, f"At most {limits.max_messages} messages per request.",
                               "invalid_request_error", "too_many_messages", "messages")
        if prompt_chars > limits.max_prompt_chars:
            raise GatewayError(400, f"The prompt has {prompt_chars} characters; the limit is "
                                    f"{limits.max_prompt_chars}.", "invalid_request_error",
                               "prompt_too_long", "messages")

    def max_tokens(self, request: ChatCompletionRequest | CompletionRequest) -> int:
        """What the request may generate per completion, checked against the limits."""
        limits = self.settings.limits
        for param in ("max_tokens", "min_tokens"):
            value = getattr(request, param)
            if value is not None and value > limits.max_tokens:
                raise GatewayError(400, f"{param} may be at most {limits.max_tokens}.",
                                   "invalid_request_error", f"{param}_too_large", param)
        if request.n > limits.max_n:
            raise GatewayError(400, f"n may be at most {limits.max_n}.",
                               "invalid_request_error", "n_too_large", "n")
        return request.max_tokens or max(min(256, limits.max_tokens), request.min_tokens or 0)
