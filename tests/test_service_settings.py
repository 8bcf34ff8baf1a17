"""What every NATS-using service's settings share, proven once per service: the NKey identity
(issue 16) comes from LAZYLOAD_NATS__NKEY_SEED_FILE and is read at start-up; a missing file or
one that holds no user seed stops the service with one line naming the setting, before anything
connects."""

from __future__ import annotations

from pathlib import Path

import pytest
from lazyload_accesslog_ingest.settings import IngestSettings
from lazyload_common import errors, natsauth, settings
from lazyload_fence_reconciler.settings import ReconcilerSettings
from lazyload_sidecar_writer.settings import WriterSettings

ServiceSettings = type[IngestSettings] | type[ReconcilerSettings] | type[WriterSettings]


@pytest.mark.parametrize("model", [IngestSettings, ReconcilerSettings, WriterSettings])
def test_nats_identity_from_the_environment(
    model: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "service.nk"
    seed.write_text(natsauth.new_seed() + "\n")
    monkeypatch.setenv("LAZYLOAD_NATS__NKEY_SEED_FILE", str(seed))
    assert settings.from_environment(model).nats.nkey_seed_file == seed
    for bad, problem in ((tmp_path / "gone.nk", "not a readable file"), (tmp_path, "readable")):
        monkeypatch.setenv("LAZYLOAD_NATS__NKEY_SEED_FILE", str(bad))
        with pytest.raises(errors.ConfigError, match=f"LAZYLOAD_NATS: .*{problem}"):
            settings.from_environment(model)
    seed.write_text("SAnotauserseed\n")
    monkeypatch.setenv("LAZYLOAD_NATS__NKEY_SEED_FILE", str(seed))
    with pytest.raises(errors.ConfigError, match="not an NKey user seed"):
        settings.from_environment(model)
