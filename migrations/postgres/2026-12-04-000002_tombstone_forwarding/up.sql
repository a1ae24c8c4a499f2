-- Where a member went when an email change took it off this address: a late event for the
-- old address then applies to the new one.
ALTER TABLE sync_tombstone ADD COLUMN moved_to TEXT;
