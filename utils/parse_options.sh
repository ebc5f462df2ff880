# utils/parse_options.sh: command-line options for recipe scripts, Kaldi style.
#
# Source it (without arguments) after the script has set its defaults:
#
#   stage=1
#   stop_stage=8
#   use_gpu=false
#   . utils/parse_options.sh
#
# Then `./run.sh --stage 3 --stop-stage=4 --use-gpu true data/dev` sets
# stage=3 stop_stage=4 use_gpu=true and leaves "data/dev" in "$@".
#
#   --some-name VALUE | --some-name=VALUE   set some_name, which must already exist
#                                            (a typo is an error, not a new variable)
#   --config FILE      source FILE (var=value lines) before the other options, so
#                      options given on the command line win over the file
#   --help | -h        print $help_message, or else the calling script's leading
#                      comment block, and exit 0
#   --                 end of options
# Parsing stops at the first argument that does not start with "--". A variable
# whose default is true or false only accepts true or false. Works under
# `set -euo pipefail`. Only names starting with __po_ are used internally, and
# they are removed again at the end.

__po_prog=${0##*/}

__po_die() {
  echo "$__po_prog: $*" >&2
  exit 1
}

__po_print_help() {
  if [[ -n ${help_message:-} ]]; then
    printf '%s\n' "$help_message"
  elif [[ -f $0 ]]; then
    # The leading comment block: after an optional #! line and blank lines,
    # every line up to the first one that is not a comment.
    awk 'NR == 1 && /^#!/ { next }
         /^#/ { started = 1; sub(/^# ?/, ""); print; next }
         !started && /^[[:space:]]*$/ { next }
         { exit }' "$0"
  else
    echo "usage: $__po_prog [--name value ...] [args ...]"
  fi
}

__po_check_config() {
  [[ -f $1 && -r $1 ]] || __po_die "config file '$1' not found"
}

# __po_set OPTION-NAME VALUE: assign VALUE to the variable the option names.
__po_set() {
  local __po_var=${1//-/_}
  if [[ ! $__po_var =~ ^[A-Za-z_][A-Za-z0-9_]*$ || $__po_var == __po_* ]] \
    || ! declare -p "$__po_var" > /dev/null 2>&1; then
    __po_die "unknown option --$1"
  fi
  local __po_old=${!__po_var-}
  if [[ ($__po_old == true || $__po_old == false) && $2 != true && $2 != false ]]; then
    __po_die "option --$1 takes true or false, not '$2'"
  fi
  printf -v "$__po_var" '%s' "$2" 2> /dev/null || __po_die "option --$1: cannot set variable $__po_var"
}

# Pass 1: --help and --config FILE, before any other option is applied.
__po_i=1
while (( __po_i <= $# )); do
  __po_arg=${!__po_i}
  case $__po_arg in
    --help | -h)
      __po_print_help
      exit 0
      ;;
    --config)
      (( __po_i < $# )) || __po_die "option --config needs a value"
      __po_i=$((__po_i + 1))
      __po_arg=${!__po_i}
      __po_check_config "$__po_arg"
      # Sourced here, not in a function, so that `declare` lines stay global.
      # shellcheck disable=SC1090
      . "$__po_arg"
      __po_i=$((__po_i + 1))
      ;;
    --config=*)
      __po_arg=${__po_arg#--config=}
      __po_check_config "$__po_arg"
      # shellcheck disable=SC1090
      . "$__po_arg"
      __po_i=$((__po_i + 1))
      ;;
    --) break ;;
    --*=*) __po_i=$((__po_i + 1)) ;;
    --?*) __po_i=$((__po_i + 2)) ;;
    *) break ;;
  esac
done

# Pass 2: every other option, in order; consumed options leave "$@".
while (( $# > 0 )); do
  case $1 in
    --)
      shift
      break
      ;;
    --config) shift 2 ;;
    --config=*) shift ;;
    --*=*)
      __po_arg=${1%%=*}
      __po_set "${__po_arg#--}" "${1#*=}"
      shift
      ;;
    --?*)
      (( $# >= 2 )) || __po_die "option $1 needs a value"
      __po_set "${1#--}" "$2"
      shift 2
      ;;
    *) break ;;
  esac
done

unset -f __po_die __po_print_help __po_check_config __po_set
unset __po_prog __po_i __po_arg
true
