"""Validate a rendered Axolotl YAML with Axolotl's own schema, before any compute is launched.

Reports `{"problems": [{"key", "message"}]}` over Pipes (empty when valid); the control plane maps
each Axolotl key back to the factory.yaml key it came from.
"""

from __future__ import annotations

import yaml

from worker.pipes import open_pipes


def problems_of(config: dict) -> list[dict[str, str]]:
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    try:
        validate_config(DictDefault(config))
    except ValidationError as exc:
        return [{"key": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
                for error in exc.errors()]
    except ValueError as exc:  # Axolotl's cross-field checks raise plain ValueErrors too
        return [{"key": "", "message": str(exc)}]
    return []


def main() -> None:
    with open_pipes() as pipes:
        problems = problems_of(yaml.safe_load(pipes.extras["axolotl_yaml"]))
        for problem in problems:
            pipes.log.warning(f"axolotl: {problem['key'] or '(config)'}: {problem['message']}")
        pipes.report_custom_message({"problems": problems})


if __name__ == "__main__":
    main()
