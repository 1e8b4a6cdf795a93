"""The client side of Nuki pairing as a pure state machine: messages in, frames out.

::

    CL → SL  Request Data (Public Key)
    SL → CL  Public Key (lock's)                 CL → SL  Public Key (ours); both derive k
    SL → CL  Challenge n1                        CL → SL  Authorization Authenticator
                                                          HMAC(k, pk_CL | pk_SL | n1)
    SL → CL  Challenge n2                        CL → SL  Authorization Data
                                                          HMAC(k, type | id | name | n_CL | n2) | type | id | name | n_CL
    SL → CL  Authorization-ID                    CL → SL  Authorization-ID Confirmation
             HMAC(k, auth id | uuid | n3 | n_CL) | auth id | uuid | n3      HMAC(k, auth id | n3) | auth id
    SL → CL  Status COMPLETE

All frames are unencrypted on the pairing GDIO characteristic. An Error Report at any
step ends pairing with :class:`NukiFrameError` carrying the lock's code.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from protocols.nuki.constants import ClientType, Command, ErrorCode, StatusCode
from protocols.nuki.frames import (
    KeyPair,
    Message,
    NukiFrameError,
    authenticator,
    encode_plain,
    shared_key,
    verify_authenticator,
)
from protocols.nuki.messages import (
    AuthorizationData,
    AuthorizationId,
    AuthorizationIdConfirmation,
    Challenge,
    ErrorReport,
    PublicKey,
    RequestData,
    Status,
)

__all__ = ["Paired", "PairingClient"]


@dataclass(frozen=True, slots=True)
class Paired:
    """What pairing produced: everything a client needs to talk to the lock later."""

    auth_id: bytes
    shared_key: bytes
    lock_public_key: bytes
    lock_uuid: bytes


class PairingClient:
    """Feed each message from the lock to :meth:`receive`; send what it returns."""

    def __init__(
        self,
        keypair: KeyPair,
        *,
        app_id: int,
        name: str,
        id_type: ClientType = ClientType.BRIDGE,
    ) -> None:
        self.keypair = keypair
        self.app_id = app_id
        self.name = name
        self.id_type = id_type
        self._step = "start"
        self._lock_pk = b""
        self._key = b""
        self._nonce_abf = b""
        self._auth_id = b""
        self._uuid = b""
        self.result: Paired | None = None

    def start(self) -> bytes:
        self._step = "public_key"
        return encode_plain(Command.REQUEST_DATA, RequestData(Command.PUBLIC_KEY).encode())

    def receive(self, msg: Message) -> bytes | None:
        """The next frame to send, or ``None`` when pairing is complete (see :attr:`result`)."""
        if msg.command == Command.ERROR_REPORT:
            report = ErrorReport.decode(msg.payload)
            code = report.error or ErrorCode.ERROR_UNKNOWN
            raise NukiFrameError(f"lock refused pairing: {report.describe()}", code)
        step = self._step
        if step == "public_key" and msg.command == Command.PUBLIC_KEY:
            self._lock_pk = PublicKey.decode(msg.payload).value
            self._key = shared_key(self._lock_pk, self.keypair.secret)
            self._step = "challenge_1"
            return encode_plain(Command.PUBLIC_KEY, self.keypair.public)
        if step == "challenge_1" and msg.command == Command.CHALLENGE:
            n1 = Challenge.decode(msg.payload).value
            self._step = "challenge_2"
            auth = authenticator(self._key, self.keypair.public, self._lock_pk, n1)
            return encode_plain(Command.AUTHORIZATION_AUTHENTICATOR, auth)
        if step == "challenge_2" and msg.command == Command.CHALLENGE:
            n2 = Challenge.decode(msg.payload).value
            self._nonce_abf = secrets.token_bytes(32)
            draft = AuthorizationData(
                bytes(32), self.id_type, self.app_id, self.name, self._nonce_abf
            )
            auth = authenticator(self._key, draft.body(), n2)
            data = AuthorizationData(auth, self.id_type, self.app_id, self.name, self._nonce_abf)
            self._step = "authorization_id"
            return encode_plain(Command.AUTHORIZATION_DATA, data.encode())
        if step == "authorization_id" and msg.command == Command.AUTHORIZATION_ID:
            aid = AuthorizationId.decode(msg.payload)
            if not verify_authenticator(
                self._key, aid.authenticator, aid.auth_id, aid.uuid, aid.nonce, self._nonce_abf
            ):
                raise NukiFrameError(
                    "the lock's Authorization-ID authenticator does not verify",
                    ErrorCode.P_ERROR_BAD_AUTHENTICATOR,
                )
            self._auth_id, self._uuid = aid.auth_id, aid.uuid
            self._step = "status"
            conf = AuthorizationIdConfirmation(
                authenticator(self._key, aid.auth_id, aid.nonce), aid.auth_id
            )
            return encode_plain(Command.AUTHORIZATION_ID_CONFIRMATION, conf.encode())
        if step == "status" and msg.command == Command.STATUS:
            if Status.decode(msg.payload).status is not StatusCode.COMPLETE:
                raise NukiFrameError("pairing did not complete", ErrorCode.ERROR_UNKNOWN)
            self._step = "done"
            self.result = Paired(self._auth_id, self._key, self._lock_pk, self._uuid)
            return None
        raise NukiFrameError(
            f"unexpected command 0x{msg.command:04x} at pairing step {step}",
            ErrorCode.P_ERROR_BAD_PARAMETER,
        )
