ALTER TABLE mailing_list DROP COLUMN webhook_signing_secret;
