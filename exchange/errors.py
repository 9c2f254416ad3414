"""Failures of the exchange layer, as values the HTTP edge maps to a status and a message."""


class ExchangeError(Exception):
    """Base of every failure a caller can act on."""


class UnknownOrganisation(ExchangeError):
    def __init__(self, slug: str):
        super().__init__(f"no organisation '{slug}' on this server; `oix org list` shows the ones there are")
        self.slug = slug


class InvalidOrganisation(ExchangeError):
    pass


class DuplicateOrganisation(ExchangeError):
    def __init__(self, slug: str):
        super().__init__(f"organisation '{slug}' already exists")
        self.slug = slug


class NotHeld(ExchangeError):
    """The organisation holds nothing at that study / series / instance."""

    def __init__(self, what: str):
        super().__init__(f"{what} is not held by this organisation")


class AuthenticationFailed(ExchangeError):
    """Credentials were presented and are not valid: `reason` is short and machine-readable
    (expired, revoked, unknown-key, bad-password, ...), the message says what to do."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class InvalidCredentialRequest(ExchangeError):
    """A request to create or change an account, membership or key that cannot be honoured."""


class UnknownCredential(ExchangeError):
    """No such account or API key in this organisation."""


class UnknownTransfer(ExchangeError):
    def __init__(self, transfer_id: str):
        super().__init__(f"no transfer '{transfer_id}' involving this organisation")


class TransferStepRefused(ExchangeError):
    """A step the transfer's state, or the caller's side of it, does not allow."""


class InvalidTransferRequest(ExchangeError):
    pass


class UnknownWebhook(ExchangeError):
    def __init__(self, org: str, webhook_id: int):
        super().__init__(f"organisation '{org}' has no webhook {webhook_id}")
        self.webhook_id = webhook_id


class UnknownForwardingRule(ExchangeError):
    def __init__(self, org: str, rule_id: int):
        super().__init__(f"organisation '{org}' has no forwarding rule {rule_id}")
        self.rule_id = rule_id
