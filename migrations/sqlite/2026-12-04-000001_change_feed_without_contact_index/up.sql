-- The change feed is read by sequence only; an index by contact cost every write a page.
DROP INDEX sync_change_contact;
