# Shared by the scripts: paths and the tool checks every entry point needs.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
lib_dir="$target_dir/release"
export CAPSULE_TARGET_DIR=${CAPSULE_TARGET_DIR:-$root/examples/capsules/target}

step() { printf '\n== %s\n' "$*"; }

need_rust() {
    command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
    # rust-toolchain.toml pins the toolchain (with its components and the
    # wasm32-wasip2 target). rustup may not install it by itself (rustup
    # 1.28.0, or auto-install off, as on the development VM), and cargo fails
    # until it is. Rustups before 1.28 lack the argument-less install; they
    # get the same toolchain spelled out. Exporting RUSTUP_TOOLCHAIN makes
    # every later cargo and rustup use it whatever the directory (an explicit
    # `cargo +nightly` still wins).
    if command -v rustup >/dev/null; then
        local channel
        channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")
        if ! (cd "$root" && rustup toolchain install); then
            rustup toolchain install "$channel" --profile minimal -c clippy -c rustfmt -t wasm32-wasip2
        fi
        export RUSTUP_TOOLCHAIN=$channel
    fi
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        step "installing the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
}

need_c() {
    command -v cc >/dev/null || { echo "a C compiler (cc) is required" >&2; exit 1; }
}

# Compiles a C or C++ test/example against the library and header.
compile_c() { # compile_c OUT SRC [extra flags]
    local out=$1 src=$2; shift 2
    local compiler=cc std=-std=c11
    case $src in *.cpp) compiler=c++; std=-std=c++17 ;; esac
    $compiler -Wall -Wextra -Werror $std -I"$root/include" "$src" -L"$lib_dir" -lastrid -lpthread \
        -Wl,-rpath,"$lib_dir" -o "$out" "$@"
}
