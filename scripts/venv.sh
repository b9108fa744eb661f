# Sourced by scripts/run, scripts/test and scripts/lint:  dim_venv PREFIX EXTRA...
#
# Makes .venv if it is missing and installs DIM into it (pip install -e ".[EXTRA,...]").
# The three scripts share one install stamp, .venv/.dim-install: its first line is a hash of
# setup.cfg and pyproject.toml, its second the extras installed with that hash.  DIM is
# installed again only when the packaging changed, DIM is not importable, or an extra is
# wanted that is not installed yet (then with the union, so no script undoes another's).
dim_venv() {
    local who="$1"; shift
    if [ ! -x .venv/bin/python ]; then
        echo "$who: creating .venv" >&2
        python3 -m venv .venv || { echo "$who: python3 -m venv failed" >&2; return 1; }
    fi
    local stamp=.venv/.dim-install want have=() extras=() missing=0 x
    want="$(cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)"
    if [ "$(sed -n 1p "$stamp" 2>/dev/null)" = "$want" ]; then
        read -r -a have <<< "$(sed -n 2p "$stamp" 2>/dev/null)"
    fi
    extras=("${have[@]}")
    for x in "$@"; do
        case " ${have[*]} " in
            *" $x "*) ;;
            *) extras+=("$x"); missing=1 ;;
        esac
    done
    if [ "$(sed -n 1p "$stamp" 2>/dev/null)" != "$want" ] || [ "$missing" = 1 ] \
            || ! .venv/bin/python -c "import dim" 2>/dev/null; then
        local spec=.
        [ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
        echo "$who: installing DIM into .venv ($spec)" >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" \
            || { echo "$who: pip install -e $spec failed" >&2; return 1; }
        printf '%s\n%s\n' "$want" "${extras[*]}" > "$stamp"
    fi
}
