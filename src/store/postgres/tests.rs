//! PostgreSQL-only behaviour: schema, claims, wake-ups, the watcher lease.
