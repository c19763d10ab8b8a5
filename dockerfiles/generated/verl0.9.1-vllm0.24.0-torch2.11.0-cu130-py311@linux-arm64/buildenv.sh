# Sourced by the Dockerfile's RUN steps (bind-mounted from the build context, never copied into a layer).
# It turns build inputs that must not persist into environment for pip, uv, apt and curl:
#   /run/secrets/ca-cert    CA bundle (PEM) for HTTPS through an intercepting proxy
#   /run/secrets/build-env  shell-quoted KEY=VALUE lines written by build.py: PIP_INDEX_URL,
#                           PIP_EXTRA_INDEX_URL, HTTP_PROXY, HTTPS_PROXY, NO_PROXY, APT_MIRROR, FLASH_ATTN_MIRROR
# Scratch files go to the tmpfs at /run/imagematrix-tmp, which is gone after each step.
if [ -s /run/secrets/ca-cert ]; then
    export SSL_CERT_FILE=/run/secrets/ca-cert PIP_CERT=/run/secrets/ca-cert \
        REQUESTS_CA_BUNDLE=/run/secrets/ca-cert CURL_CA_BUNDLE=/run/secrets/ca-cert
fi
if [ -s /run/secrets/build-env ]; then
    set -a
    . /run/secrets/build-env
    set +a
fi
if [ -n "${PIP_INDEX_URL:-}" ]; then export UV_DEFAULT_INDEX="$PIP_INDEX_URL"; fi
if [ -n "${PIP_EXTRA_INDEX_URL:-}" ]; then export UV_INDEX="$PIP_EXTRA_INDEX_URL"; fi
if [ -n "${HTTP_PROXY:-}" ]; then export http_proxy="$HTTP_PROXY"; fi
if [ -n "${HTTPS_PROXY:-}" ]; then export https_proxy="$HTTPS_PROXY"; fi
if [ -n "${NO_PROXY:-}" ]; then export no_proxy="$NO_PROXY"; fi
APT_OPTS="-o Dir::State::Lists=/run/imagematrix-tmp/apt-lists -o Dir::Cache::Archives=/run/imagematrix-tmp/apt-archives"
mkdir -p /run/imagematrix-tmp/apt-lists/partial /run/imagematrix-tmp/apt-archives/partial
if [ -n "${APT_MIRROR:-}" ]; then
    . /etc/os-release
    components=main
    if [ "$ID" = ubuntu ]; then components="main universe"; fi
    echo "deb ${APT_MIRROR} ${VERSION_CODENAME} ${components}" > /run/imagematrix-tmp/sources.list
    APT_OPTS="$APT_OPTS -o Dir::Etc::SourceList=/run/imagematrix-tmp/sources.list -o Dir::Etc::SourceParts=/dev/null"
fi
export APT_OPTS
FLASH_ATTN_BASE="${FLASH_ATTN_MIRROR:-https://github.com/Dao-AILab/flash-attention/releases/download}"
export FLASH_ATTN_BASE
