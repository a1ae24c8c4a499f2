CREATE INDEX sync_change_contact ON sync_change (contact_id);
