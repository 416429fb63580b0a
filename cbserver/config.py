"""Settings: environment (``CBSERVER_*``) over an optional TOML file over defaults in code."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many

ENV_PREFIX = "CBSERVER_"
RATE_LIMITS = (
    "rate_limit_per_ip",
    "rate_limit_per_number",
    "rate_limit_per_subscriber",
    "rate_limit_numbers_per_ip",
    "rate_limit_public",
)
RATE_LIMIT_STORAGES = ("memory://", "redis://", "rediss://", "redis+unix://", "redis+sentinel://")
COOKIE_SAMESITE = ("Lax", "Strict", "None")
# Any of these (or nothing) lifts a rate limit; the environment cannot say "" (unset).
NO_LIMIT = ("", "off", "none", "no")
# A worker's name is stored with each call it claims (a column of 64 characters).
WORKER_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class ConfigError(ValueError):
    """A setting has a value cbserver cannot use; the message names the setting."""


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cbserver"


def _default_asterisk_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cbserver" / "asterisk-root"


@dataclass(frozen=True)
class Settings:
    """Every knob of one cbserver installation. Each field is read from ``CBSERVER_<NAME>``."""

    state_dir: Path = field(default_factory=_default_state_dir)
    database_url: str = ""

    # Asterisk: a binary >= 20 on PATH is used when present, else a Debian sid root built once.
    asterisk_binary: str = ""
    asterisk_root: Path = field(default_factory=_default_asterisk_root)
    asterisk_instance: str = "default"
    asterisk_start_timeout: float = 60.0
    debian_mirror: str = ""

    # Ports are chosen away from a system Asterisk's 5060/8088/5038/10000-20000.
    sip_port: int = 5260
    http_port: int = 8288
    ami_port: int = 5238
    # The worker's FastAGI server, on loopback, for the dialplan of calls coming in.
    agi_port: int = 5239
    rtp_port_start: int = 31000
    rtp_port_end: int = 31999
    sip_bind: str = "127.0.0.1"
    # Where agents' phones may register and call from (and name in their Contact): comma-
    # separated networks. Add the office's LAN when SIP listens on more than loopback.
    agent_networks: str = "127.0.0.0/8,::1/128"
    media_address: str = ""

    ari_app: str = "cbserver"
    # An Asterisk cbserver does not run itself, e.g. on another host: its ARI base URL
    # ("http://10.0.0.5:8088/ari") and an ari.conf user of it. Empty: the instance's own ARI,
    # with the credentials generated for it.
    ari_url: str = ""
    ari_username: str = ""
    ari_password: str = ""

    # The worker, one per Asterisk, several sharing one PostgreSQL. Its name is kept with the
    # calls it claims, so a restarted worker carries on with its own: keep it stable. Empty:
    # the host's name (two workers on one host need names of their own).
    worker_name: str = ""
    # Calls one worker (so its Asterisk) carries at once; it claims no more than that.
    worker_max_calls: int = 50
    # A claim lapses unless renewed within this; another worker then takes over the request of
    # one that died.
    worker_lease_seconds: float = 120.0

    # The call: how long an agent's phone rings before the next agent is tried, how long the
    # visitor's rings, and how long an agent has to press 1 after answering.
    agent_ring_seconds: int = 30
    visitor_ring_seconds: int = 45
    accept_seconds: float = 15.0
    # Visitors' numbers, names and topics are erased this many days after a request ends.
    retention_days: int = 90

    # The web front end: hosted form, widget, JSON API, visitor status page.
    web_host: str = "127.0.0.1"
    web_port: int = 8280
    # Signs CSRF tokens; generated once into <state_dir>/secret_key when left empty.
    secret_key: str = ""
    # The web wakes a worker in another process with a datagram to this loopback port.
    worker_wake_port: int = 8281
    # Who may read /metrics (per-business figures): comma-separated networks.
    metrics_networks: str = "127.0.0.0/8,::1/128"
    # How many reverse proxies in front of the web each add themselves to X-Forwarded-For:
    # the client's address is then read from that header. 0: the connection's address.
    trusted_proxies: int = 0
    # Comma-separated networks the proxies connect from: from anywhere else the header is not
    # believed (a visitor could write any address into it).
    trusted_proxy_networks: str = "127.0.0.1/32,::1/128"
    # SameSite of the session cookie that carries the hosted form's CSRF token: "Lax", or
    # "None" (then Secure, and so HTTPS only) for a form framed by another site; or "Strict".
    cookie_samesite: str = "Lax"

    # Rate limits (see ratelimits.py), each like "10 per hour; 3 per minute"; "off" lifts one.
    # Where the counts are kept: in the web process, or in Redis ("redis://host:6379/0")
    # when several web processes must share them.
    rate_limit_storage: str = "memory://"
    # Submissions (hosted form and API) from one client address.
    rate_limit_per_ip: str = "10 per hour; 3 per minute"
    # Requests to call one number, across all subscribers: no call bombing.
    rate_limit_per_number: str = "3 per day"
    # Requests one subscriber takes.
    rate_limit_per_subscriber: str = "30 per minute"
    # Different numbers one client address may ask calls for.
    rate_limit_numbers_per_ip: str = "3 per hour"
    # The other public pages and calls (status, slots, reschedule, cancel) per client address;
    # a status page asks once a second while it is open.
    rate_limit_public: str = "300 per minute"
    # A hosted form (or widget) sent sooner than this after it was shown is taken for a bot's.
    form_min_seconds: float = 3.0
    # ... and one sent longer than this after it was shown, or a second time, too.
    form_max_hours: float = 12.0

    # The PSTN gateway. Empty means the local demo gateway (a sipp UAS echoing audio).
    trunk_uri: str = ""
    trunk_username: str = ""
    trunk_password: str = ""
    trunk_register: bool = False
    trunk_from_domain: str = ""
    # OPTIONS pings to the trunk; off by default because Asterisk refuses to dial a contact
    # it has marked unreachable, and some providers never answer OPTIONS.
    trunk_qualify_seconds: int = 0
    demo_gateway_port: int = 5290

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'cbserver.sqlite3'}"

    @property
    def effective_trunk_uri(self) -> str:
        return self.trunk_uri or f"sip:127.0.0.1:{self.demo_gateway_port}"

    @property
    def uses_demo_gateway(self) -> bool:
        return not self.trunk_uri

    @property
    def agent_network_list(self) -> list[str]:
        return networks(f"{ENV_PREFIX}AGENT_NETWORKS", self.agent_networks)

    @property
    def trusted_proxy_network_list(self) -> list[str]:
        return networks(f"{ENV_PREFIX}TRUSTED_PROXY_NETWORKS", self.trusted_proxy_networks)

    @property
    def effective_worker_name(self) -> str:
        return self.worker_name or socket.gethostname()[:64]

    @property
    def uses_remote_ari(self) -> bool:
        return bool(self.ari_url)

    @property
    def effective_media_address(self) -> str:
        if self.media_address:
            return self.media_address
        # Without an explicit address Asterisk resolves one per call, which stalls without DNS.
        return "127.0.0.1" if self.sip_bind in ("0.0.0.0", "::", "") else self.sip_bind

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Read settings; the file is ``CBSERVER_CONFIG`` unless given, and is optional."""
        env = os.environ if environ is None else environ
        if config_file is None and env.get(f"{ENV_PREFIX}CONFIG"):
            config_file = Path(env[f"{ENV_PREFIX}CONFIG"])
        from_file: dict[str, Any] = {}
        if config_file is not None:
            try:
                from_file = tomllib.loads(config_file.read_text())
            except FileNotFoundError as exc:
                raise ConfigError(f"config file {config_file} does not exist") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise ConfigError(f"config file {config_file}: unknown setting(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env_name = ENV_PREFIX + f.name.upper()
            if env.get(env_name, "") != "":
                values[f.name] = _convert(env_name, env[env_name], hints[f.name])
            elif f.name in from_file:
                values[f.name] = _convert(f.name, from_file[f.name], hints[f.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in (
            "sip_port",
            "http_port",
            "ami_port",
            "agi_port",
            "rtp_port_start",
            "rtp_port_end",
            "web_port",
            "worker_wake_port",
        ):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={port} is not a port (1-65535)")
        if self.rtp_port_end - self.rtp_port_start < 10:
            raise ConfigError(
                f"RTP port range {self.rtp_port_start}-{self.rtp_port_end} is too small "
                "(two ports per call leg; give at least 10)"
            )
        used = [self.sip_port, self.http_port, self.ami_port, self.agi_port]
        if len(set(used)) != len(used):
            raise ConfigError(f"SIP, HTTP, AMI and AGI ports must differ (got {used})")
        if self.trunk_qualify_seconds < 0:
            raise ConfigError(f"{ENV_PREFIX}TRUNK_QUALIFY_SECONDS must be 0 (off) or more")
        for name in ("agent_ring_seconds", "visitor_ring_seconds", "accept_seconds"):
            if not 1 <= getattr(self, name) <= 600:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}={getattr(self, name)} must be 1 to 600 seconds"
                )
        if not 1 <= self.retention_days <= 3650:
            raise ConfigError(
                f"{ENV_PREFIX}RETENTION_DAYS={self.retention_days} must be 1 to 3650 days"
            )
        if self.asterisk_start_timeout <= 0:
            raise ConfigError(f"{ENV_PREFIX}ASTERISK_START_TIMEOUT must be positive")
        networks(f"{ENV_PREFIX}AGENT_NETWORKS", self.agent_networks)
        self._validate_worker_settings()
        self._validate_abuse_settings()

    def _validate_worker_settings(self) -> None:
        if self.worker_name and not WORKER_NAME.fullmatch(self.worker_name):
            raise ConfigError(
                f"{ENV_PREFIX}WORKER_NAME={self.worker_name!r} must be at most 64 letters, "
                "digits and . _ : -"
            )
        if not 1 <= self.worker_max_calls <= 2000:
            raise ConfigError(
                f"{ENV_PREFIX}WORKER_MAX_CALLS={self.worker_max_calls} must be 1 to 2000 calls"
            )
        if not 2 <= self.worker_lease_seconds <= 3600:
            raise ConfigError(
                f"{ENV_PREFIX}WORKER_LEASE_SECONDS={self.worker_lease_seconds:g} must be 2 to "
                "3600 seconds"
            )
        if not self.ari_url:
            return
        if not _is_http_url(self.ari_url):
            raise ConfigError(
                f"{ENV_PREFIX}ARI_URL={self.ari_url!r} is not an ARI URL like "
                "http://10.0.0.5:8088/ari"
            )
        if urlsplit(self.ari_url).username is not None:
            # It would be shown wherever the URL is (doctor, logs): the password has its own.
            raise ConfigError(
                f"{ENV_PREFIX}ARI_URL must not carry a user or password: set "
                f"{ENV_PREFIX}ARI_USERNAME and {ENV_PREFIX}ARI_PASSWORD"
            )
        for name in ("ari_username", "ari_password"):
            if not getattr(self, name):
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()} is needed with {ENV_PREFIX}ARI_URL "
                    "(a user of that Asterisk's ari.conf)"
                )

    def _validate_abuse_settings(self) -> None:
        for name in RATE_LIMITS:
            text = getattr(self, name)
            try:
                rate_limits(text)
            except ValueError as exc:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}={text!r} is not a rate limit like "
                    '"10 per hour; 3 per minute" (or "off")'
                ) from exc
        if not self.rate_limit_storage.startswith(RATE_LIMIT_STORAGES):
            raise ConfigError(
                f"{ENV_PREFIX}RATE_LIMIT_STORAGE={self.rate_limit_storage!r} must start with "
                f"{' or '.join(RATE_LIMIT_STORAGES)}"
            )
        if not 0 <= self.trusted_proxies <= 10:
            raise ConfigError(f"{ENV_PREFIX}TRUSTED_PROXIES must be 0 (none) to 10")
        if not 0 <= self.form_min_seconds <= 60:
            raise ConfigError(f"{ENV_PREFIX}FORM_MIN_SECONDS must be 0 (off) to 60 seconds")
        if not 0 < self.form_max_hours <= 168:
            raise ConfigError(f"{ENV_PREFIX}FORM_MAX_HOURS must be more than 0, at most 168")
        networks(f"{ENV_PREFIX}TRUSTED_PROXY_NETWORKS", self.trusted_proxy_networks)
        if self.cookie_samesite not in COOKIE_SAMESITE:
            raise ConfigError(
                f"{ENV_PREFIX}COOKIE_SAMESITE={self.cookie_samesite!r} must be one of "
                f"{', '.join(COOKIE_SAMESITE)}"
            )


def rate_limits(text: str) -> list[RateLimitItem]:
    """A rate-limit setting's limits; none when it is lifted. ValueError when unreadable."""
    if text.strip().lower() in NO_LIMIT:
        return []
    return parse_many(text)


def networks(name: str, text: str) -> list[str]:
    """Comma-separated networks as ``192.0.2.0/24``; ConfigError naming the setting when one
    is no network (an empty list is one too: it would let nothing in)."""
    found = []
    for part in (piece.strip() for piece in text.split(",")):
        try:
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError as exc:
            raise ConfigError(f"{name}: {part!r} is not a network like 192.0.2.0/24") from exc
    return found


def _is_http_url(text: str) -> bool:
    """An http(s) URL with a host, and with a port that is one when it names one."""
    try:
        url = urlsplit(text)
        # Reading the port raises ValueError for one out of range.
        return url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        return False


def _convert(name: str, raw: Any, kind: Any) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected yes/no")
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError("expected a whole number")
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(str(raw)).expanduser()
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc
