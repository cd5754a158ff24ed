"""undertow.core: what every undertow package imports and nothing else owns.

- ``errors``: ``UndertowError`` (one-line messages naming the fix) and ``ConfigError``;
- ``typed_config``: the one config mechanism (typed dataclasses <-> YAML, CLI flags generated from them);
- ``validate``: the checks shared by every reader of untrusted files (JSON, safetensors headers, paths);
- ``fileio`` (atomic writes, sha256), ``digests`` (memoised file digests under the user cache);
- ``progress`` (the one progress bar), ``provenance`` (package versions, machine, benchmark records);
- ``seeds``: ``derive_seed(seed, stage)``, the one seed scheme (a stream per stage name).

It sits at the bottom of the dependency direction (``core`` <- ``activations`` <- {``probes``, ``sae``} <-
``experiments``; ``kernels`` take no configs and need none of it) and imports no other undertow package.
"""

from .errors import ConfigError, UndertowError
from .fileio import atomic_write, sha256_file
from .progress import Bar
from .provenance import bench_record, machine, package_versions
from .seeds import derive_seed
from .typed_config import TypedConfig, add_config_arguments, check_value, yaml_lines

__all__ = [
    "Bar", "ConfigError", "TypedConfig", "UndertowError", "add_config_arguments", "atomic_write", "bench_record",
    "check_value", "derive_seed", "machine", "package_versions", "sha256_file", "yaml_lines",
]
