"""The agent as a Windows service: pywin32's service framework around the Daemon that ``dlp-agent run`` runs.

The service control manager starts ``dlp-agent.exe service run --config PATH``: the configuration path
lives in the service's command line (``sc.exe qc DlpAgent`` shows it), written by ``dlp-agent service
install [--config PATH]``; without ``--config`` it is ``%ProgramData%\\DLP Agent\\agent.toml``. pywin32 is
imported inside functions only, so this module imports (and its pure parts are tested) anywhere.
"""

from __future__ import annotations

import logging
import logging.handlers
import ntpath
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.display import TerminalFormatter

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.daemon import Daemon

log = logging.getLogger(__name__)

SERVICE_NAME = "DlpAgent"
DISPLAY_NAME = "DLP Endpoint Agent"
DESCRIPTION = (
    "Watches files and removable drives for the customer's code and documents and reports copies to the DLP collector."
)
PRODUCT_DIR = "DLP Agent"
LOG_FILE = "agent.log"
LOG_MAX_BYTES = 10 << 20
LOG_BACKUPS = 5
START_WAIT_S = 60
EXIT_ERROR = 2
_ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063
_ERROR_SERVICE_NOT_ACTIVE = 1062
_ERROR_SERVICE_EXISTS = 1073
_ERROR_SERVICE_ALREADY_RUNNING = 1056

Notify = Callable[[str, str], None]
"""``notify(level, message)`` with level ``info`` or ``error``: the Windows event log in the service."""


class ServiceError(Exception):
    """The service cannot start (bad configuration, rules or spool); the message says why."""


def data_dir(environ: Mapping[str, str] | None = None) -> str:
    """``%ProgramData%\\DLP Agent``: configuration, state and logs of the service."""
    environ = os.environ if environ is None else environ
    return ntpath.join(environ.get("ProgramData") or r"C:\ProgramData", PRODUCT_DIR)


def default_config_path(environ: Mapping[str, str] | None = None) -> str:
    return ntpath.join(data_dir(environ), "agent.toml")


def log_dir(environ: Mapping[str, str] | None = None) -> str:
    return ntpath.join(data_dir(environ), "logs")


def service_arguments(config_path: str) -> list[str]:
    """What the service control manager passes to ``dlp-agent.exe`` (after the program name)."""
    return ["service", "run", "--config", config_path]


def service_command_line(executable: str, config_path: str) -> str:
    """The service's ImagePath, quoted as Windows programs parse their command line."""
    return subprocess.list2cmdline([executable, *service_arguments(config_path)])


def stop_wait_hint_ms(config: AgentConfig) -> int:
    """The wait hint sent with SERVICE_STOP_PENDING: as long as the daemon's stop may take."""
    from agent.daemon import stop_budget_s

    return int(stop_budget_s(config) * 1000)


def configure_logging(directory: str) -> logging.Handler:
    """Send the agent's log (INFO and up) to ``directory\\agent.log``, rotated; returns the handler.

    The service has no console: the handlers ``main()`` set up for stderr are replaced.
    """
    os.makedirs(directory, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        os.path.join(directory, LOG_FILE), maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    # Log lines name files and volumes, whose names anyone who can write there chooses.
    handler.setFormatter(TerminalFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


class ServiceHost:
    """One daemon run for the service: ``run()`` on the service's thread, ``request_stop()`` from the SCM's.

    A stop that arrives while the configuration is still loading is kept and honoured once the
    daemon exists, so a quick start-stop never leaves a daemon running.
    """

    def __init__(self, config_path: str, *, notify: Notify, daemon_factory: Callable[[AgentConfig], Daemon] | None = None):
        self.config_path = config_path
        self._notify = notify
        self._daemon_factory = daemon_factory
        self._lock = threading.Lock()
        self._stop_requested = False
        self._daemon: Daemon | None = None
        self.config: AgentConfig | None = None

    def stop_wait_hint_ms(self) -> int:
        from agent.config import AgentConfig

        return stop_wait_hint_ms(self.config or AgentConfig())

    def run(self) -> None:
        """Load the configuration, run the daemon until ``request_stop()``.

        Raises:
            ServiceError: the agent cannot start; already reported through ``notify``.
        """
        from agent.config import ConfigError, load_config
        from agent.daemon import Daemon
        from agent.scanning import RuleError
        from agent.spool import SpoolError

        try:
            self.config = load_config(self.config_path)
        except ConfigError as exc:
            raise self._fatal(f"configuration error:\n{exc}") from None
        daemon = (self._daemon_factory or Daemon)(self.config)
        with self._lock:
            self._daemon = daemon
            if self._stop_requested:
                daemon.request_stop()
        self._notify("info", f"{DISPLAY_NAME} running with {self.config_path}")
        try:
            daemon.run()
        except RuleError as exc:
            raise self._fatal(f"rules error: {exc}") from None
        except SpoolError as exc:
            raise self._fatal(f"spool error: {exc}") from None
        except Exception as exc:
            log.exception("the agent stopped on an unexpected error")
            raise self._fatal(f"unexpected error: {type(exc).__name__}: {exc}") from None

    def request_stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            daemon = self._daemon
        if daemon is not None:
            daemon.request_stop()

    def _fatal(self, message: str) -> ServiceError:
        log.error("%s", message)
        self._notify("error", f"{DISPLAY_NAME} cannot run: {message}")
        return ServiceError(message)


# pywin32 from here on: Windows only --------------------------------------------------


def _event_log(level: str, message: str) -> None:
    import servicemanager

    try:
        (servicemanager.LogErrorMsg if level == "error" else servicemanager.LogInfoMsg)(message)
    except Exception:  # the event log is a courtesy; the log file has the same line
        log.warning("could not write to the event log: %s", message)


def service_class(config_path: str) -> type:
    """The ServiceFramework subclass hosting the agent with ``config_path``."""
    import servicemanager
    import win32service
    import win32serviceutil

    class DlpAgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.host = ServiceHost(config_path, notify=_event_log)

        def SvcStop(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=self.host.stop_wait_hint_ms())
            self.host.request_stop()

        def SvcShutdown(self) -> None:
            # Windows gives services only seconds at shutdown; the spool is durable, queued paths may be lost.
            self.SvcStop()

        def SvcDoRun(self) -> None:
            configure_logging(log_dir())
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STARTED, (self._svc_name_, ""))
            # A ServiceError propagates: the SCM then records a failure and applies the recovery actions.
            self.host.run()
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE, servicemanager.PYS_SERVICE_STOPPED, (self._svc_name_, ""))

    return DlpAgentService


def host(config_path: str) -> int:
    """``service run``: hand this process to the SCM, which then runs the service on its own thread."""
    import pywintypes
    import servicemanager

    servicemanager.Initialize(SERVICE_NAME, None)
    servicemanager.PrepareToHostSingle(service_class(config_path))
    try:
        servicemanager.StartServiceCtrlDispatcher()
    except pywintypes.error as exc:
        if exc.winerror == _ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
            print(
                "dlp-agent: 'service run' is what the service control manager starts; "
                f"use 'dlp-agent service start', or 'dlp-agent run --config {config_path}' in a console",
                file=sys.stderr,
            )
        else:
            print(f"dlp-agent: cannot host the service: {exc.strerror} ({exc.winerror})", file=sys.stderr)
        return EXIT_ERROR
    return 0


def install(config_path: str) -> int:
    """Register (or update) the service: this executable, automatic delayed start, LocalSystem."""
    import pywintypes
    import win32service
    import win32serviceutil

    if not getattr(sys, "frozen", False):
        print("dlp-agent: install the service from dlp-agent.exe built with PyInstaller (installer/dlp-agent.spec); "
              "a Python environment cannot host it reliably", file=sys.stderr)
        return EXIT_ERROR
    if not os.path.isfile(config_path):
        print(f"dlp-agent: {config_path}: no such file (the service reads its configuration there)", file=sys.stderr)
        return EXIT_ERROR
    arguments = subprocess.list2cmdline(service_arguments(config_path))
    options: dict[str, Any] = dict(startType=win32service.SERVICE_AUTO_START, exeName=sys.executable, exeArgs=arguments,
                                   description=DESCRIPTION, delayedstart=True)
    try:
        try:
            win32serviceutil.InstallService(None, SERVICE_NAME, DISPLAY_NAME, **options)
            print(f"installed service {SERVICE_NAME}: {service_command_line(sys.executable, config_path)}")
        except pywintypes.error as exc:
            if exc.winerror != _ERROR_SERVICE_EXISTS:
                raise
            win32serviceutil.ChangeServiceConfig(None, SERVICE_NAME, displayName=DISPLAY_NAME, **options)
            print(f"updated service {SERVICE_NAME}: {service_command_line(sys.executable, config_path)}")
    except pywintypes.error as exc:
        print(f"dlp-agent: cannot install the service: {exc.strerror} ({exc.winerror})", file=sys.stderr)
        return EXIT_ERROR
    return 0


def start(config_path: str) -> int:
    import pywintypes
    import win32service
    import win32serviceutil

    try:
        try:
            win32serviceutil.StartService(SERVICE_NAME)
        except pywintypes.error as exc:
            # Started meanwhile (a delayed automatic start at boot, the recovery actions): wait for it.
            if exc.winerror != _ERROR_SERVICE_ALREADY_RUNNING:
                raise
        win32serviceutil.WaitForServiceStatus(SERVICE_NAME, win32service.SERVICE_RUNNING, START_WAIT_S)
    except pywintypes.error as exc:
        print(f"dlp-agent: cannot start {SERVICE_NAME}: {exc.strerror} ({exc.winerror}); see {log_dir()}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{SERVICE_NAME} running")
    return 0


def stop(config_path: str) -> int:
    import pywintypes
    import win32service
    import win32serviceutil

    from agent.config import AgentConfig, ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError:
        config = AgentConfig()
    try:
        try:
            win32serviceutil.StopService(SERVICE_NAME)
        except pywintypes.error as exc:
            if exc.winerror != _ERROR_SERVICE_NOT_ACTIVE:
                raise
        win32serviceutil.WaitForServiceStatus(SERVICE_NAME, win32service.SERVICE_STOPPED, stop_wait_hint_ms(config) // 1000 + 5)
    except pywintypes.error as exc:
        print(f"dlp-agent: cannot stop {SERVICE_NAME}: {exc.strerror} ({exc.winerror})", file=sys.stderr)
        return EXIT_ERROR
    print(f"{SERVICE_NAME} stopped")
    return 0


def remove(config_path: str) -> int:
    """Stop the service if it runs, then delete it (state and configuration stay)."""
    import pywintypes
    import win32serviceutil

    status = stop(config_path)
    if status != 0:
        return status
    try:
        win32serviceutil.RemoveService(SERVICE_NAME)
    except pywintypes.error as exc:
        print(f"dlp-agent: cannot remove {SERVICE_NAME}: {exc.strerror} ({exc.winerror})", file=sys.stderr)
        return EXIT_ERROR
    print(f"removed service {SERVICE_NAME}")
    return 0


ACTIONS: dict[str, Callable[[str], int]] = {"install": install, "remove": remove, "start": start, "stop": stop, "run": host}
