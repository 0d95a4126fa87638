#!/bin/sh
# Entrypoint of the Redis stand-in image (docker/redis/Dockerfile), after the official image's:
# options alone (`--maxmemory 1gb`) or a config file start redis-server; started as root, it
# drops to the redis user. Without a config file, protected mode is off by default, as in the
# official image (which compiles that default in): a container is reached from other addresses.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
	shift
	case "${1:-}" in
		*.conf) set -- redis-server "$@" ;;
		*) set -- redis-server --protected-mode no "$@" ;;
	esac
	um="$(umask)"
	if [ "$um" = 0022 ]; then umask 0077; fi
	if [ "$(id -u)" = 0 ]; then
		find . \! -user redis -exec chown redis '{}' +
		exec setpriv --reuid=redis --regid=redis --init-groups "$@"
	fi
fi
exec "$@"
