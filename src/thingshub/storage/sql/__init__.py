"""What SQLite and PostgreSQL share: queries, row mapping, repositories, the connection protocol."""
