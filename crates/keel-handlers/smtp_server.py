"""A real SMTP server for the email handler's tests (aiosmtpd, from PyPI).

Prints its port, then serves until stdin closes. Each accepted message is parsed with
Python's MIME parser and written as OUT/<n>.json (headers, both bodies decoded, encodings).
Recipients starting with `reject` are refused with 550, `busy` with 451. AUTH PLAIN/LOGIN
accepts keel / s3cret, and is required when --auth is given.
"""

import asyncio
import email
import json
import os
import socket
import sys
from email import policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "text_encoding": text["content-transfer-encoding"] if text is not None else None,
            "authenticated": bool(session.authenticated),
            "peer_port": session.peer[1],
        }
        self.n += 1
        path = os.path.join(self.out, f"{self.n:06d}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Ok: queued as KEEL%06d" % self.n


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"keel" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


def main():
    out = sys.argv[1]
    require_auth = "--auth" in sys.argv
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    controller = Controller(
        Handler(out),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=require_auth,
        auth_require_tls=False,
    )
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
