# Sourced by the recipe scripts after their defaults: every "--name value" pair sets the
# shell variable "name", which must already exist (so typos fail loudly).
while [ $# -gt 0 ]; do
    case "$1" in
        --*) _name="${1#--}"
             [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
             declare -p "${_name}" >/dev/null 2>&1 || { echo "$0: unknown option $1" >&2; exit 1; }
             printf -v "${_name}" '%s' "$2"
             shift 2 ;;
        *) echo "$0: unexpected argument $1" >&2; exit 1 ;;
    esac
done
