"""The LLM advisor: one structured-output chat completion per analysis pass, within a budget.

It speaks the OpenAI chat-completions API through the official async client, so `base_url` points
it at OpenAI, Azure OpenAI (its /openai/v1/ endpoint), Ollama, vLLM or any compatible server. The
client's own retry is kept (it honours Retry-After and backs off on 408/409/429/5xx and connection
errors) but bounded by `max_retries`, each attempt by `timeout`, and the whole call by a deadline
over both. Every outcome is counted in `lipservice_llm_requests_total{outcome}`; any failure
returns None and the loop falls back to the heuristic.

Servers differ in the parameters they accept: OpenAI's reasoning models refuse `max_tokens` (they
want `max_completion_tokens`, which Ollama and older servers do not know) and any `temperature` but
the default. A 400 that names one of these parameters changes the request (kept for every later
call, and logged once) and the request is sent again, at most MAX_ADAPTATIONS times per call.

The budget is a sliding hour of calls and tokens. A call is refused up front when it would exceed
either (its cost estimated from the prompt length plus the completion limit); after the call, the
usage the server reports is what counts. Retries inside the client count as one call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

import openai
from openai.types.chat import ChatCompletion

from ..config import LlmConfig
from ..errors import ConfigError
from ..telemetry import Telemetry
from .guardrails import Candidate
from .prompt import RESPONSE_FORMAT, AnswerError, Prompt, answer_to_candidate, parse_answer

log = logging.getLogger(__name__)

MAX_COMPLETION_TOKENS = 8000
CHARS_PER_TOKEN = 4  # a rough, cautious estimate for the budget check before a call
HOUR = 3600.0
BACKOFF_ALLOWANCE = 10.0  # seconds of client backoff allowed between attempts within the deadline
NO_KEY = "unused"  # local servers (Ollama, vLLM) ignore the key, but the client wants one
MAX_ADAPTATIONS = 2  # one per adaptable parameter; a server refusing every variant is an error
TOKEN_LIMIT_PARAMETERS = ("max_tokens", "max_completion_tokens")


class HourlyBudget:
    """Calls and tokens used in the last hour."""

    def __init__(self, max_calls: int, max_tokens: int) -> None:
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self._calls: deque[tuple[float, int]] = deque()  # (time, tokens) per call

    def _prune(self, now: float) -> None:
        while self._calls and self._calls[0][0] <= now - HOUR:
            self._calls.popleft()

    def allows(self, now: float, estimated_tokens: int) -> bool:
        self._prune(now)
        used = sum(tokens for _, tokens in self._calls)
        return len(self._calls) < self.max_calls and used + estimated_tokens <= self.max_tokens

    def record(self, now: float, tokens: int) -> None:
        self._calls.append((now, tokens))


def api_key(config: LlmConfig, environ: Mapping[str, str]) -> str:
    key = environ.get(config.api_key_env, "")
    if key:
        return key
    if config.base_url is None:
        raise ConfigError(
            f"analysis.llm: the environment variable {config.api_key_env} (api_key_env) holds no API key; "
            "set it, or set analysis.llm.base_url for a server that needs none"
        )
    return NO_KEY


class LlmAdvisor:
    def __init__(
        self,
        config: LlmConfig,
        telemetry: Telemetry,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._telemetry = telemetry
        self._clock = clock
        self.budget = HourlyBudget(config.max_calls_per_hour, config.max_tokens_per_hour)
        self._client = openai.AsyncOpenAI(
            api_key=api_key(config, environ),
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
        )
        self._deadline = config.timeout * (config.max_retries + 1) + BACKOFF_ALLOWANCE * config.max_retries
        self._token_limit_parameter = "max_tokens"  # what most compatible servers know
        self._send_temperature = True

    @property
    def model(self) -> str:
        return self._config.model

    async def aclose(self) -> None:
        await self._client.close()

    async def propose(self, prompt: Prompt) -> Candidate | None:
        """The model's candidate, or None (counted by outcome) when it cannot be had or trusted."""
        estimate = sum(len(m["content"]) for m in prompt.messages) // CHARS_PER_TOKEN + MAX_COMPLETION_TOKENS
        if not self.budget.allows(self._clock(), estimate):
            self._fail("budget_exhausted", "the hourly LLM budget is used up")
            return None
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._complete(prompt.messages)
        except (openai.APITimeoutError, TimeoutError):
            self._fail("timeout", f"no answer within {self._config.timeout}s per attempt", spent=True)
            return None
        except openai.RateLimitError as exc:
            self._fail("rate_limited", f"rate limited: {exc.message}", spent=True)
            return None
        except openai.APIStatusError as exc:
            self._fail("error", f"HTTP {exc.status_code}: {exc.message}", spent=True)
            return None
        except openai.APIError as exc:  # connection errors, and answers the client cannot read
            self._fail("error", f"{type(exc).__name__}: {exc.message}", spent=True)
            return None

        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else estimate - MAX_COMPLETION_TOKENS
        completion_tokens = usage.completion_tokens if usage else 0
        self.budget.record(self._clock(), prompt_tokens + completion_tokens)
        self._telemetry.llm_tokens.labels("prompt").inc(prompt_tokens)
        self._telemetry.llm_tokens.labels("completion").inc(completion_tokens)
        try:
            if not response.choices:
                raise AnswerError("the answer has no choices")
            answer = parse_answer(response.choices[0].message.content)
        except AnswerError as exc:
            self._fail("invalid", f"invalid answer: {exc}")
            return None
        self._telemetry.llm_requests.labels("success").inc()
        return answer_to_candidate(answer, prompt, self._config.model)

    async def _complete(self, messages: list[dict[str, str]]) -> ChatCompletion:
        adaptations = 0
        while True:
            tuning: dict[str, float | int] = {self._token_limit_parameter: MAX_COMPLETION_TOKENS}
            if self._send_temperature:
                tuning["temperature"] = 0
            try:
                # messages, response format and tuning are plain dicts (the token limit's name is only
                # known at run time), which the client's TypedDict overloads cannot take
                return await self._client.chat.completions.create(  # type: ignore[call-overload, no-any-return]  # dicts
                    model=self._config.model,
                    messages=messages,
                    response_format=RESPONSE_FORMAT,
                    **tuning,
                )
            except openai.BadRequestError as exc:
                adaptations += 1
                if adaptations > MAX_ADAPTATIONS or not self._adapt(exc):
                    raise

    def _adapt(self, refusal: openai.BadRequestError) -> bool:
        """Change the request for a parameter the server refused; False when it named none we can change."""
        named = refusal.param or next(
            (p for p in (*TOKEN_LIMIT_PARAMETERS, "temperature") if f"'{p}'" in refusal.message), None
        )
        if named == self._token_limit_parameter:
            other = next(p for p in TOKEN_LIMIT_PARAMETERS if p != named)
            log.info("the LLM server refuses %s; sending %s from now on", named, other)
            self._token_limit_parameter = other
            return True
        if named == "temperature" and self._send_temperature:
            log.info("the LLM server refuses temperature 0; sending its default from now on")
            self._send_temperature = False
            return True
        return False

    def _fail(self, outcome: str, message: str, *, spent: bool = False) -> None:
        if spent:  # the call happened (and may have cost tokens) even though no usage came back
            self.budget.record(self._clock(), 0)
        self._telemetry.llm_requests.labels(outcome).inc()
        log.warning("LLM call failed (%s), falling back to the heuristic: %s", outcome, message)
