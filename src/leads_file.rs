//! Reading leads from CSV, JSON and JSON Lines files, with line-numbered errors for bad rows.
