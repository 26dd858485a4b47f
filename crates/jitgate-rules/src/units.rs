//! Durations (`"50s"`, `"15m"`, `"2h"`) and sizes (`"1MiB"`, `"512KiB"`, `"1048576"`).
