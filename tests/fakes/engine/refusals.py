"""How each real tool words a refused command line, and the exit code it gives.

The sources are named per tool below (and in each flags/<tool>.json's provenance).
"""

from typing import Any

from .commands import Command, Refusal


class Dialect:
    """cobra's defaults: "Error: ..." on stderr (cobra command.go ExecuteC)."""

    flag_exit = 1
    unknown_exit = 1

    def flag_error(self, node: "Command | None", message: str, data: dict[str, Any]) -> Refusal:
        return Refusal(self.flag_exit, stderr=f"Error: {message}\n")

    def args_error(self, message: str) -> Refusal:
        return Refusal(1, stderr=f"Error: {message}\n")

    def unknown_command(self, message: str) -> Refusal:
        root = self.root
        return Refusal(self.unknown_exit, stderr=f"Error: {message}\nRun '{root} --help' for usage.\n")

    def group_without_subcommand(self, node: Command) -> Refusal:
        # A command that cannot run by itself: cobra prints its help and succeeds.
        return Refusal(0, stdout=f"Usage:\n  {node.use_line(True)}\n")

    def no_args(self, node: Command, first: str) -> str:
        return f'unknown command "{first}" for "{node.command_path()}"'  # cobra.NoArgs

    def count_problem(self, node: Command, rule: dict[str, Any], count: int) -> str | None:
        if "exact" in rule and count != rule["exact"]:
            return rule.get("message") or f"accepts {rule['exact']} arg(s), received {count}"
        if "max" in rule and count > rule["max"]:
            return f"accepts at most {rule['max']} arg(s), received {count}"
        if "min" in rule and count < rule["min"]:
            return f"requires at least {rule['min']} arg(s), only received {count}"
        return None

    root = ""


class KindDialect(Dialect):
    """kind logs every error as "ERROR: ..." and exits 1 (cmd/kind/app/main.go); its logger
    ends a message with a newline only when it lacks one (pkg/internal/cli/logger.go)."""

    root = "kind"

    def flag_error(self, node: "Command | None", message: str, data: dict[str, Any]) -> Refusal:
        return self.args_error(message)

    def unknown_command(self, message: str) -> Refusal:
        return self.args_error(message)

    def args_error(self, message: str) -> Refusal:
        text = f"ERROR: {message}"
        return Refusal(1, stderr=text if text.endswith("\n") else text + "\n")

    def group_without_subcommand(self, node: Command) -> Refusal:
        # kind's group commands print their help, then fail (pkg/cmd/kind/create/create.go and friends).
        if not node.path:
            return Refusal(0, stdout=f"Usage:\n  {node.use_line(True)}\n")
        return Refusal(1, stdout=f"Usage:\n  {node.use_line(True)}\n", stderr="ERROR: Subcommand is required\n")


class HelmDialect(Dialect):
    """Helm's own argument checks (cmd/helm/require/args.go); exit 1 (cmd/helm/helm.go)."""

    root = "helm"

    def count_problem(self, node: Command, rule: dict[str, Any], count: int) -> str | None:
        usage = f"\n\nUsage:  {node.use_line(True)}"
        path = node.command_path()
        if "exact" in rule and count != rule["exact"]:
            n = rule["exact"]
            return f'"{path}" requires {n} argument{"" if n == 1 else "s"}{usage}'
        if "min" in rule and count < rule["min"]:
            n = rule["min"]
            return f'"{path}" requires at least {n} argument{"" if n == 1 else "s"}{usage}'
        if "max" in rule and count > rule["max"]:
            n = rule["max"]
            return f'"{path}" accepts at most {n} argument{"" if n == 1 else "s"}{usage}'
        return None


class IstioctlDialect(Dialect):
    """Flag errors and unknown commands exit 64 (istioctl/cmd/sysexits.go GetExitCode)."""

    root = "istioctl"
    flag_exit = 64
    unknown_exit = 64

    def args_error(self, message: str) -> Refusal:
        return Refusal(64 if "unknown command" in message else 1, stderr=f"Error: {message}\n")


class DockerDialect(Dialect):
    """docker/cli's own wording (cli/cobra.go FlagErrorFunc, cli/required.go, cmd/docker/docker.go)."""

    root = "docker"

    def args_error(self, message: str) -> Refusal:
        return Refusal(1, stderr=f"{message}\n")

    def flag_error(self, node: "Command | None", message: str, data: dict[str, Any]) -> Refusal:
        if node is None:
            return Refusal(125, stderr=f"{message}\n")
        usage = node.use_line(data.get("flags_in_use_line", True))
        return Refusal(125, stderr=f"{message}\n\nUsage:  {usage}\n\nRun '{node.command_path()} --help' "
                                   "for more information\n")

    def unknown_command(self, message: str) -> Refusal:
        return Refusal(1, stderr=f"docker: unknown command: docker {message}\n\n"
                                 "Run 'docker --help' for more information\n")

    def no_args(self, node: Command, first: str) -> str:
        return (f"docker: '{node.command_path()}' accepts no arguments\n\nUsage:  {node.use_line(False)}\n\n"
                f"Run '{node.command_path()} --help' for more information")


DIALECTS: dict[str, Dialect] = {
    "docker": DockerDialect(), "helm": HelmDialect(), "istioctl": IstioctlDialect(), "kind": KindDialect(),
}
