# event_store: PGXS build.  The version is defined once, in event_store.control.
EXTENSION  = event_store
PG_CONFIG ?= pg_config
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = event_store
OBJS = src/event_store.o src/versioning.o src/append.o src/read.o src/upcast.o \
       src/aggregate.o src/snapshot.o src/command.o src/crypto.o \
       src/decoder.o src/publish.o src/shmem.o src/launcher.o src/worker.o src/read_all.o \
       src/projection.o src/projector.o src/locks.o src/check.o

DATA = $(wildcard sql/$(EXTENSION)--*.sql)
HEADERS_event_store = src/event_store.h

# -Wall -Wextra clean.  Postgres's own headers are included as system headers
# so that their unused inline parameters do not drown our warnings.
PG_CPPFLAGS = -DEXTVERSION=\"$(EXTVERSION)\" -DEVENT_STORE_INTERNAL -isystem $(shell $(PG_CONFIG) --includedir-server)
PG_CFLAGS   = -Wall -Wextra

# Every suite runs against its own throwaway cluster with the settings in test/event_store.conf.
REGRESS      = event_log append_events read_stream bad_input append_only privileges upcasting \
               aggregates execute aggregate_property upcasting_paths crypto \
               decoder publish read_all projections upgrade check privilege_matrix
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=test/event_store.conf

ISOLATION      = append_conflict append_no_expected upcaster_cache execute_conflict crypto_forget \
                 read_all_order event_id_race projection_wait projection_rebuild projection_inline
ISOLATION_OPTS = --inputdir=test --outputdir=output_iso \
                 --temp-instance=./tmp_check_iso --temp-config=test/event_store.conf

TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = output_iso tmp_check_regress tmp_check_iso \
              test/modules/upcast_hook/upcast_hook.o test/modules/upcast_hook/upcast_hook$(DLSUFFIX)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The test-only C module that the regression test `upcasting` loads by path.
installcheck: test/modules/upcast_hook/upcast_hook$(DLSUFFIX)
test/modules/upcast_hook/upcast_hook$(DLSUFFIX): test/modules/upcast_hook/upcast_hook.c src/event_store.h
	$(MAKE) -C test/modules/upcast_hook PG_CONFIG=$(PG_CONFIG)

# PGXS tracks no header dependencies: rebuild every object when a header changes.
$(OBJS): $(wildcard src/*.h)
