ALTER TABLE sync_tombstone DROP COLUMN moved_to;
