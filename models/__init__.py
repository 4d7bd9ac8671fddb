"""Configuration, SQLModel tables and the database session shared by server, worker and CLI."""
