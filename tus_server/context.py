"""What every part of the web app shares, built once from Settings and passed down."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from models.config import Settings
from models.db import init_db, make_engine
from models.layout import Layout


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    layout: Layout
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, "tusflow-io"))
    # Set when the process is asked to stop, so long requests (PATCH bodies, event streams)
    # can save their work and end instead of being cut off at the graceful-shutdown timeout.
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, settings: Settings) -> "AppContext":
        layout = Layout(settings.data_dir)
        layout.ensure()
        engine = make_engine(settings)
        init_db(engine)
        return cls(settings=settings, engine=engine, layout=layout)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.engine.dispose()
