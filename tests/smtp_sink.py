#!/usr/bin/env python3
"""A real SMTP server for slotguard's email tests, on loopback only.

    python3 tests/smtp_sink.py PORT DIR [--reject-rcpt "550 5.1.1 No such user"]
                                        [--auth USER:PASSWORD]
                                        [--tls-cert CERT.pem --tls-key KEY.pem
                                         [--implicit-tls]]

Listens on 127.0.0.1:PORT (0 picks a free port) and prints `READY <port>` once it
accepts connections. Every message it accepts is written to DIR as NNNN.eml, the raw
RFC 5322 bytes as received, and beside it NNNN.json: the envelope (mailFrom, rcptTos)
and each MIME leaf part decoded by Python's `email` package, so a test can check
what arrived without a MIME parser of its own. Both files are complete before the
server answers 250 to DATA, so they exist by the time the client's send returns.

--reject-rcpt answers every RCPT TO with the given reply (a 4xx or 5xx line), to
test how the client classifies refusals. --auth requires SMTP AUTH (PLAIN or LOGIN,
allowed without TLS: this is a test server on loopback) with those credentials.

--tls-cert and --tls-key (PEM files; the test makes a self-signed certificate) offer
STARTTLS and require it before MAIL FROM; with --implicit-tls the connection is TLS
from the first byte instead (SMTPS). Each message's NNNN.json then says which TLS
version carried it ("tls"; null for plain text).

Needs the aiosmtpd package: pip install aiosmtpd
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    sys.stderr.write("smtp_sink.py needs the aiosmtpd package: pip install aiosmtpd\n")
    sys.exit(3)


class Sink:
    def __init__(self, directory, rcpt_reply):
        self.directory = directory
        self.rcpt_reply = rcpt_reply
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = os.path.join(self.directory, f"{self.count:04d}")
        raw = envelope.original_content
        tls = server.transport.get_extra_info("ssl_object")
        record = summary(envelope, raw)
        record["tls"] = tls.version() if tls is not None else None
        write_atomically(stem + ".eml", raw)
        write_atomically(stem + ".json", json.dumps(record, indent=2).encode())
        return "250 OK: queued as " + os.path.basename(stem)


def summary(envelope, raw):
    message = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [
        {"contentType": part.get_content_type(), "content": part.get_content()}
        for part in message.walk()
        if not part.is_multipart()
    ]
    return {
        "mailFrom": envelope.mail_from,
        "rcptTos": envelope.rcpt_tos,
        "headers": [[name, str(value)] for name, value in message.items()],
        "parts": parts,
    }


def write_atomically(path, data):
    # A reader polling the directory never sees half a file.
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def authenticator_for(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # handled=False: aiosmtpd then answers 535 itself (its default, handled=True,
        # means "I already replied" and leaves the client waiting).
        return AuthResult(success=ok, handled=False)

    return authenticate


async def serve(args):
    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir, args.reject_rcpt)
    authenticator = authenticator_for(args.auth) if args.auth else None
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    starttls = context if context is not None and not args.implicit_tls else None

    def protocol():
        return SMTP(
            handler,
            # A fixed name: the default asks DNS for this machine's FQDN, which can
            # hang for seconds on a machine without a resolver.
            hostname="smtp-sink.localhost",
            authenticator=authenticator,
            auth_required=authenticator is not None,
            auth_require_tls=False,
            tls_context=starttls,
            require_starttls=starttls is not None,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        protocol,
        host="127.0.0.1",
        port=args.port,
        ssl=context if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description="SMTP sink for slotguard's tests")
    parser.add_argument("port", type=int, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("dir", help="directory for the received messages")
    parser.add_argument("--reject-rcpt", metavar="REPLY", help='e.g. "550 5.1.1 No such user"')
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require SMTP AUTH")
    parser.add_argument("--tls-cert", metavar="PEM", help="offer and require STARTTLS")
    parser.add_argument("--tls-key", metavar="PEM", help="the key of --tls-cert")
    parser.add_argument(
        "--implicit-tls", action="store_true", help="TLS from the first byte (SMTPS)"
    )
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.implicit_tls and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together; --implicit-tls needs both")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
