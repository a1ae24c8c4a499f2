"""What an Odoo module does with mailchimp-sync, as a standalone client.

It generates its gRPC stubs from proto/ with grpcio-tools, then, over a channel that carries
the bearer token:

1. creates an account and generates its webhook URL;
2. posts webhook bodies from tests/fixtures/webhooks/cases.json, as Mailchimp would;
3. follows ListChanges from a saved cursor (a file, as a module keeps it in a system
   parameter) and applies each change to in-memory tables shaped like Odoo's
   mailing_contact and mailing_subscription, plus mail_blacklist;
4. compares those tables with ListContacts and GetContact.

It exits 0 when the tables match the service and 1 with the differences otherwise.

    python client.py --grpc 127.0.0.1:50051 --token TOKEN --cursor-file /tmp/cursor
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
CASES = ROOT / "tests" / "fixtures" / "webhooks" / "cases.json"
PROTO_FILES = ["accounts", "contacts"]


def generate_stubs(out_dir):
    """Compiles the contract into Python modules in out_dir and imports them."""
    includes = Path(protoc.__file__).parent / "_proto"
    for name in PROTO_FILES:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{includes}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / "mailchimp_sync" / "v1" / f"{name}.proto"),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {name}.proto")
    sys.path.insert(0, str(out_dir))
    stubs = {}
    for name in PROTO_FILES:
        stubs[name] = importlib.import_module(f"mailchimp_sync.v1.{name}_pb2")
        stubs[name + "_grpc"] = importlib.import_module(f"mailchimp_sync.v1.{name}_pb2_grpc")
    return stubs


class Bearer(grpc.AuthMetadataPlugin):
    """Sends `authorization: Bearer <token>` with every call."""

    def __init__(self, token):
        self.token = token

    def __call__(self, context, callback):
        callback((("authorization", f"Bearer {self.token}"),), None)


def channel(address, token):
    # grpcio sends call credentials only over a secure channel; the local credentials
    # treat a loopback connection as one, as an Odoo server next to the service would.
    credentials = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
        grpc.metadata_call_credentials(Bearer(token)),
    )
    return grpc.secure_channel(address, credentials)


def post_webhook(url, body):
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class OdooTables:
    """mailing_contact, mailing_subscription and mail_blacklist, kept from the feed."""

    def __init__(self):
        self.mailing_contact = {}  # id -> {"email_normalized": ...}
        self.mailing_subscription = {}  # (contact_id, list) -> {"status", "opt_out"}
        self.mail_blacklist = set()

    def apply(self, change):
        contact_id = change.contact_id
        if change.kind == "contact_removed":
            self.mailing_contact.pop(contact_id, None)
            for key in [key for key in self.mailing_subscription if key[0] == contact_id]:
                del self.mailing_subscription[key]
            return
        if change.kind == "blacklisted":
            self.mail_blacklist.add(change.email_normalized)
            return
        if change.kind == "unblacklisted":
            self.mail_blacklist.discard(change.email_normalized)
            return
        self.mailing_contact[contact_id] = {"email_normalized": change.email_normalized}
        if change.kind == "cleaned":
            # A cleaned address is blacklisted too, as Odoo does with a hard bounce; the
            # feed says it once, with the subscription's new state.
            self.mail_blacklist.add(change.email_normalized)
        if not change.HasField("audience_id"):
            return
        key = (contact_id, change.mailchimp_list_id)
        if change.kind == "subscription_removed":
            self.mailing_subscription.pop(key, None)
        elif change.status:
            self.mailing_subscription[key] = {"status": change.status, "opt_out": change.opt_out}

    def contact_view(self, contact_id):
        subscriptions = sorted(
            (list_id, row["status"], row["opt_out"])
            for (owner, list_id), row in self.mailing_subscription.items()
            if owner == contact_id
        )
        email = self.mailing_contact[contact_id]["email_normalized"]
        return {
            "email_normalized": email,
            "is_blacklisted": email in self.mail_blacklist,
            "subscriptions": subscriptions,
        }


def service_view(contact):
    subscriptions = sorted(
        (s.mailchimp_list_id, s.status, s.opt_out) for s in contact.subscriptions
    )
    return {
        "email_normalized": contact.email_normalized,
        "is_blacklisted": contact.is_blacklisted,
        "subscriptions": subscriptions,
    }


def follow_changes(contacts_stub, pb, cursor_file, tables):
    """Reads the feed after the saved cursor, applies it, saves the cursor; returns how many."""
    cursor = int(cursor_file.read_text()) if cursor_file.exists() else 0
    applied = 0
    while True:
        page = contacts_stub.ListChanges(pb.ListChangesRequest(after_sequence=cursor, limit=50))
        if not page.changes:
            return applied
        for change in page.changes:
            if change.sequence <= cursor:
                raise SystemExit(f"the feed went backwards at {change.sequence}")
            tables.apply(change)
            cursor = change.sequence
            applied += 1
        cursor_file.write_text(str(cursor))


def all_contacts(contacts_stub, pb):
    found, token = [], ""
    while True:
        page = contacts_stub.ListContacts(pb.ListContactsRequest(page_size=7, page_token=token))
        found.extend(page.contacts)
        token = page.next_page_token
        if not token:
            return found


def compare(tables, contacts_stub, pb):
    differences = []
    listed = {contact.id: contact for contact in all_contacts(contacts_stub, pb)}
    for contact_id in sorted(set(listed) | set(tables.mailing_contact)):
        if contact_id not in listed:
            differences.append(f"contact {contact_id} is in Odoo's table only")
            continue
        if contact_id not in tables.mailing_contact:
            differences.append(f"contact {contact_id} is in the service only")
            continue
        ours = tables.contact_view(contact_id)
        theirs = service_view(listed[contact_id])
        fetched = contacts_stub.GetContact(pb.GetContactRequest(id=contact_id))
        if ours != theirs or service_view(fetched) != theirs:
            differences.append(f"contact {contact_id}: Odoo {ours}, service {theirs}")
    return differences


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", required=True, help="host:port of the gRPC listener")
    parser.add_argument("--token", default=os.environ.get("MAILCHIMP_SYNC_GRPC_TOKEN"))
    parser.add_argument("--cursor-file", required=True, type=Path)
    args = parser.parse_args()
    if not args.token:
        raise SystemExit("give --token or MAILCHIMP_SYNC_GRPC_TOKEN")

    with tempfile.TemporaryDirectory() as out_dir:
        return run(args, generate_stubs(out_dir))


def run(args, stubs):
    accounts_pb, contacts_pb = stubs["accounts"], stubs["contacts"]
    with channel(args.grpc, args.token) as chan:
        accounts = stubs["accounts_grpc"].AccountServiceStub(chan)
        contacts = stubs["contacts_grpc"].ContactServiceStub(chan)
        account = accounts.CreateAccount(
            accounts_pb.CreateAccountRequest(
                name="Odoo", api_key="0123456789abcdef0123456789abcdef-us6"
            )
        )
        url = accounts.GenerateWebhookUrl(
            accounts_pb.GenerateWebhookUrlRequest(account_id=account.id)
        ).webhook_url

        tables = OdooTables()
        cases = json.loads(CASES.read_text())["cases"]
        half = len(cases) // 2
        # Two rounds, so the second resumes from the saved cursor like a cron job would.
        for round_cases in (cases[:half], cases[half:]):
            for case in round_cases:
                for event in case["events"]:
                    status = post_webhook(url, event["body"])
                    if status >= 500:
                        raise SystemExit(f"{case['name']}: answered {status}")
            applied = follow_changes(contacts, contacts_pb, args.cursor_file, tables)
            print(f"applied {applied} changes")

        differences = compare(tables, contacts, contacts_pb)
    for difference in differences:
        print(difference)
    if differences or not tables.mailing_contact:
        print(f"{len(differences)} differences, {len(tables.mailing_contact)} contacts")
        return 1
    print(f"{len(tables.mailing_contact)} contacts match the service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
