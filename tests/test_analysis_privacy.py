"""Nothing planted in a log line reaches the LLM: a real proxy, the real `openai` client, and a
loopback OpenAI-compatible server that keeps every request body it receives.

The corpus is a few hundred lines of a dozen message kinds with a planted value in each line
(names, hosts, emails, API tokens, AWS key ids and secrets, JWTs, card numbers, IBANs, phone
numbers), one-off lines, and a few secrets repeated unchanged through a busy pattern (so their
pattern is confirmed and only the shape rules and the secrets detector stand in the way). It is
sent over three analysis passes; from the first prompt on, no planted value, and no piece of four
or more characters of a planted secret that is not an ordinary word of the corpus or the prompt,
may appear in any request.
"""

from __future__ import annotations

import random
import re
import string
import time
from pathlib import Path

import orjson

from lipservice_proxy.analysis.prompt import SYSTEM_PROMPT
from lipservice_proxy.analysis.redact import redact_template

from .support.fake_llm import FakeLlm, Reply, answer, user_document
from .test_analysis_llm import llm_settings, run, running_proxy, send

FIRST_NAMES = ["dave", "erin", "mallory", "trent", "peggy", "victor", "walter", "olivia", "quentin", "rupert"]
LAST_NAMES = ["secretuser", "hackerman", "blackwood", "fairweather", "thornbury", "ashdown", "kingsley"]


class Corpus:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.planted: list[str] = []  # every value that must not leave, whole
        self.secrets: list[str] = []  # values none of whose 4+ character pieces may leave

    def _chars(self, alphabet: str, n: int) -> str:
        return "".join(self.random.choice(alphabet) for _ in range(n))

    def plant(self, value: str, *, secret: bool = False) -> str:
        self.planted.append(value)
        if secret:
            self.secrets.append(value)
        return value

    def name(self) -> str:
        first, last = self.random.choice(FIRST_NAMES), self.random.choice(LAST_NAMES)
        return self.plant(f"{first}.{last}{self.random.randint(1, 99)}")

    def full_name(self) -> str:
        return self.plant(
            f"{self.random.choice(FIRST_NAMES).title()} {self.random.choice(LAST_NAMES).title()}"
        )

    def host(self) -> str:
        word = self._chars(string.ascii_lowercase, 4)
        return self.plant(
            f"db-{word}-{self.random.randint(1, 9)}.internal.{self._chars(string.ascii_lowercase, 5)}.com"
        )

    def email(self) -> str:
        return self.plant(
            f"{self.random.choice(FIRST_NAMES)}.{self._chars(string.ascii_lowercase, 6)}@example.org"
        )

    def api_key(self) -> str:
        return self.plant(self._chars(string.ascii_letters + string.digits, 32), secret=True)

    def github_token(self) -> str:
        return self.plant("ghp_" + self._chars(string.ascii_letters + string.digits, 36), secret=True)

    def aws_key_id(self) -> str:
        return self.plant("AKIA" + self._chars(string.ascii_uppercase + string.digits, 16), secret=True)

    def aws_secret(self) -> str:
        return self.plant(self._chars(string.ascii_letters + string.digits + "/+", 40), secret=True)

    def jwt(self) -> str:
        alphabet = string.ascii_letters + string.digits + "-_"
        parts = [
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
            "eyJ" + self._chars(alphabet, 40),
            self._chars(alphabet, 43),
        ]
        return self.plant(".".join(parts), secret=True)

    def card(self) -> str:
        digits = "4" + self._chars(string.digits, 15)
        return self.plant(" ".join(digits[i : i + 4] for i in range(0, 16, 4)), secret=True)

    def iban(self) -> str:
        bank = self._chars(string.ascii_uppercase, 4)
        return self.plant(
            f"GB{self.random.randint(10, 99)}{bank}{self._chars(string.digits, 14)}", secret=True
        )

    def phone(self) -> str:
        return self.plant(f"+44 20 {self.random.randint(1000, 9999)} {self.random.randint(1000, 9999)}")

    def lines(self, count: int) -> list[tuple[str, str]]:
        kinds = [
            (lambda: f"password reset requested for {self.name()}", "INFO"),
            (lambda: f"connecting to {self.host()} port 5432", "INFO"),
            (
                lambda: f"login failed for user={self.name()} password=hunter{self.random.randint(1, 99)}",
                "WARN",
            ),
            (lambda: f"request authorised with api_key={self.api_key()} for tenant", "DEBUG"),
            (lambda: f"uploading with key {self.aws_key_id()} secret {self.aws_secret()}", "INFO"),
            (lambda: f"auth header Bearer {self.jwt()} accepted", "DEBUG"),
            (lambda: f"charged card {self.card()} for order", "INFO"),
            (lambda: f"payout to IBAN {self.iban()} scheduled", "INFO"),
            (lambda: f"SMS sent to {self.phone()} for {self.full_name()}", "INFO"),
            (lambda: f"welcome mail sent to {self.email()}", "INFO"),
            (lambda: f"session {self.github_token()} opened by {self.full_name()}", "INFO"),
            (lambda: f"payment declined for {self.full_name()} card {self.card()}", "ERROR"),
        ]
        lines = []
        for i in range(count):
            make, severity = kinds[i % len(kinds)]
            lines.append((make(), severity))
        return lines

    def one_offs(self) -> list[tuple[str, str]]:
        return [
            (f"manual override by {self.full_name()} from {self.host()}", "WARN"),
            (f"exported report to {self.email()} with token {self.github_token()}", "INFO"),
            (f"debug dump key={self.api_key()} owner {self.name()}", "DEBUG"),
            (f"Rotated credentials {self.aws_key_id()}/{self.aws_secret()} today", "INFO"),
            (f"refund to {self.iban()} phone {self.phone()}", "INFO"),
        ]

    def constant_secrets(self, count: int) -> list[tuple[str, str]]:
        """One key id, one secret, one host and one JWT repeated unchanged through busy patterns."""
        key_id, secret, host, jwt = self.aws_key_id(), self.aws_secret(), self.host(), self.jwt()
        return [
            line
            for _ in range(count)
            for line in (
                (f"using static credentials {key_id} for uploads", "INFO"),
                (f"static secret {secret} loaded", "DEBUG"),
                (f"replicating to {host} now", "INFO"),
                (f"service token {jwt} refreshed", "DEBUG"),
            )
        ]


def ordinary(piece: str, allowed: str) -> bool:
    return piece.lower() in allowed


PATTERN_ID = re.compile(r"\b[0-9a-f]{16}\b")  # a hash of a template: the prompt shows aliases instead


def leaks(body: str, corpus: Corpus, allowed: str) -> list[str]:
    found = PATTERN_ID.findall(body)
    found += [value for value in corpus.planted if value in body]
    for secret in corpus.secrets:
        for size in range(4, len(secret) + 1):
            for start in range(len(secret) - size + 1):
                piece = secret[start : start + size]
                if piece in body and not ordinary(piece, allowed):
                    found.append(piece)
    return found


def test_no_planted_value_reaches_the_llm_from_the_first_prompt_on(tmp_path: Path) -> None:
    corpus = Corpus(seed=23)
    batches = [
        corpus.lines(120) + corpus.one_offs(),
        corpus.lines(120) + corpus.one_offs() + corpus.constant_secrets(15),
        corpus.lines(120) + corpus.one_offs() + corpus.constant_secrets(15),
    ]
    assert sum(len(b) for b in batches) >= 400 and len(corpus.planted) >= 300

    async def scenario() -> None:
        async with (
            FakeLlm(Reply(answer({}))) as llm,
            running_proxy(tmp_path, {"llm": llm_settings(llm.base_url)}) as proxy,
        ):
            for index, batch in enumerate(batches):
                await send(proxy, batch[: len(batch) // 2], service="billing")
                await send(proxy, batch[len(batch) // 2 :], service="identity")
                result = await proxy.analysis.run_once(time.time() + index)
                assert result.outcome == "llm", result
            assert len(llm.requests) == len(batches)

            corpus_words = " ".join(
                word for batch in batches for body, _ in batch for word in body.split() if word.isalpha()
            )
            allowed = (SYSTEM_PROMPT + " " + corpus_words).lower()
            for number, request in enumerate(llm.requests, 1):
                body = orjson.dumps(request).decode()
                assert leaks(body, corpus, allowed) == [], f"request {number}"
            # the prompt still says what the lines were about: the words of the message survive
            templates = [
                p["template"] for f in user_document(llm.requests[-1])["families"] for p in f["patterns"]
            ]
            assert any(t.startswith("using static credentials <*>") for t in templates), templates
            assert any(t.startswith("charged card") for t in templates), templates

    run(scenario)


def test_an_unconfirmed_pattern_shows_only_placeholders_and_everyday_words() -> None:
    template = "password reset requested for dave by Mallory from <IP>"
    assert redact_template(template, lines_seen=1) == "password reset requested for <*> by <*> from <IP>"
    assert redact_template(template, lines_seen=500) == template


def test_variable_looking_tokens_are_masked_however_often_seen() -> None:
    seen = 10_000
    cases = {
        "connecting to db-cnnc-<NUM>.internal.crnbs.com now": "connecting to <*> now",
        "login failed for user=eve.hacker password=hunter<NUM>": "login failed for user=<*> password=<*>",
        "api_key=zz<NUM>FfkCzJr<NUM>x sent": "api_key=<*> sent",
        "using key AKIAIOSFODNN<NUM>EXAMPLE now": "using key <*> now",
        "token ZqWfTrXpLmNb in use": "token <*> in use",
        "mail to bob@example.org sent": "mail to <*> sent",
        "user José logged in": "user <*> logged in",
        "user Дмитрий logged in": "user <*> logged in",
        "code:Xk<NUM> returned": "code:<*> returned",
    }
    for template, sent in cases.items():
        assert redact_template(template, seen) == sent
    kept = "NullPointerException in getUserById of HTTPServer: block blk_<NUM> (<SIZE>) key=<*>"
    assert redact_template(kept, seen) == kept


def test_the_secrets_detector_masks_what_the_shape_rules_let_through() -> None:
    # an all-lower-case token is word-shaped, but detect-secrets knows a Slack token's form
    template = "posting with xoxb-abcdefghijkl-mnopqrstuvwx to channel"
    assert redact_template(template, lines_seen=10_000) == "posting with <*> to channel"
