-- Each audience's webhook has a signing secret of its own.
ALTER TABLE mailing_list ADD COLUMN webhook_signing_secret TEXT;
