"""Recovery-time reports: the versioned report record, its history in SQLite, and its renderings."""
