#!/usr/bin/env bash
# Prepares a full `loupe` for the GPU machine, whose image lacks some of loupe's libraries
# (json-c, poppler-glib and what poppler pulls in) and every -dev package: run HERE (no GPU
# needed), then carry build-devfull/app/loupe and .devlibs to the device and run
#   LD_LIBRARY_PATH=$PWD/.devlibs build-devfull/app/loupe ...
#
# 1. builds the whole tree with CUDA for sm_90 into build-devfull/ (git-ignored);
# 2. copies into .devlibs/ (git-ignored) every shared library the binary needs except glibc's,
#    the CUDA toolkit's and those the GPU machine's Ubuntu 24.04 image is known to have with the
#    same soname (pcre2, ncursesw, curl and its TLS stack, libxml2 and ICU): carrying ICU's 30 MB
#    of data would break the 64 MiB carry limit, and the image's own copies are ABI-compatible.
# Prints the sizes; keep what a call carries well under 64 MiB with the tracked files (~37 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-devfull -DLOUPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-devfull -j"$(nproc)" --target loupe
rm -rf .devlibs && mkdir -p .devlibs
skip='^(linux-vdso|libc\.so|libm\.so|libdl|libpthread|librt|ld-linux|libgcc_s|libstdc\+\+|libcuda|libcublas|libcudart|libpcre2|libncursesw|libtinfo|libcurl|libssl|libcrypto|libgnutls|libnghttp|libssh|librtmp|libpsl|libidn2|libunistring|libkrb5|libk5crypto|libgssapi|libkrb5support|libcom_err|libkeyutils|libldap|liblber|libsasl2|libbrotli|libzstd|libz\.so|libxml2|libicu|liblzma|libp11-kit|libtasn1|libnettle|libhogweed|libgmp|libffi|libresolv)'
ldd build-devfull/app/loupe | awk '$3 ~ /^\// {print $1, $3}' | while read -r name path; do
    [[ $name =~ $skip ]] && continue
    cp -L "$path" ".devlibs/$name"
done
# The same libraries packed (a third of the size), for calls that carry a second binary too
tar -cJf .devlibs.tar.xz .devlibs
du -sh .devlibs .devlibs.tar.xz build-devfull/app/loupe
