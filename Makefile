# event_store: PGXS build.  The version is defined once, in event_store.control.
EXTENSION  = event_store
PG_CONFIG ?= pg_config
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = event_store
OBJS = src/event_store.o src/catalog.o src/spi.o src/locks.o \
       src/versioning.o src/stream_heads.o src/append.o \
       src/scan.o src/read.o src/read_node.o src/positions.o \
       src/aggregate.o src/snapshot.o src/command.o \
       src/upcast.o src/upcast_registry.o \
       src/crypto.o src/crypto_bridge.o src/crypto_keys.o src/crypto_rules.o src/crypto_paths.o \
       src/crypto_fields.o src/crypto_forget.o \
       src/decoder.o src/publish.o \
       src/shmem.o src/launcher.o src/worker.o src/worker_buffer.o src/worker_log.o src/pipeline_status.o src/restore.o src/health.o \
       src/projection.o src/projection_handler.o src/projection_parked.o src/projector.o \
       src/check.o src/message_db.o

DATA = $(wildcard sql/$(EXTENSION)--*.sql)
HEADERS_event_store = src/event_store.h

# -Wall -Wextra clean.  Postgres's own headers are included as system headers
# so that their unused inline parameters do not drown our warnings.
PG_CPPFLAGS = -DEXTVERSION=\"$(EXTVERSION)\" -isystem $(shell $(PG_CONFIG) --includedir-server)
PG_CFLAGS   = -Wall -Wextra

# Every suite runs against its own throwaway cluster with the settings in test/event_store.conf.
REGRESS      = event_log append_events append_insert read_stream bad_input append_only privileges upcasting \
               aggregates execute aggregate_property upcasting_paths crypto \
               decoder publish read_all projections health upgrade check privilege_matrix
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=test/event_store.conf

ISOLATION      = append_conflict append_no_expected upcaster_cache execute_conflict crypto_forget \
                 read_all_order event_id_race projection_wait projection_rebuild projection_inline stream_head_cache type_index_checkxmin \
                 read_stream_node
ISOLATION_OPTS = --inputdir=test --outputdir=output_iso \
                 --temp-instance=./tmp_check_iso --temp-config=test/event_store.conf

TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = output_iso tmp_check_regress tmp_check_iso \
              test/modules/upcast_hook/upcast_hook.o test/modules/upcast_hook/upcast_hook$(DLSUFFIX) \
              test/modules/abort_at_commit/abort_at_commit.o test/modules/abort_at_commit/abort_at_commit$(DLSUFFIX)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The test-only C module that the regression test `upcasting` loads by path.
installcheck: test/modules/upcast_hook/upcast_hook$(DLSUFFIX) test/modules/abort_at_commit/abort_at_commit$(DLSUFFIX)
test/modules/upcast_hook/upcast_hook$(DLSUFFIX): test/modules/upcast_hook/upcast_hook.c src/event_store.h
	$(MAKE) -C test/modules/upcast_hook PG_CONFIG=$(PG_CONFIG)
test/modules/abort_at_commit/abort_at_commit$(DLSUFFIX): test/modules/abort_at_commit/abort_at_commit.c
	$(MAKE) -C test/modules/abort_at_commit PG_CONFIG=$(PG_CONFIG)

# PGXS tracks no header dependencies: rebuild every object when a header changes.
$(OBJS): $(wildcard src/*.h)

# The message-db compatibility layer, an extension of its own (message_db/):
# built, installed and tested with this one.  It runs its own suites, not the
# ones named on the command line (make installcheck REGRESS=check ...).
all: message_db-all
install: message_db-install
installcheck: message_db-installcheck
clean: message_db-clean
MESSAGE_DB_TARGETS = message_db-all message_db-install message_db-installcheck message_db-clean
$(MESSAGE_DB_TARGETS): MAKEOVERRIDES =
$(MESSAGE_DB_TARGETS):
	$(MAKE) -C message_db PG_CONFIG=$(PG_CONFIG) $(patsubst message_db-%,%,$@)
.PHONY: $(MESSAGE_DB_TARGETS)
