/*-------------------------------------------------------------------------
 *
 * upcast.h
 *	  Upcasting: old event shapes turned into the newest on read.  The
 *	  registry's cache and the chains (upcast.c), the functions that change
 *	  the registry (upcast_registry.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_STORE_UPCAST_H
#define EVENT_STORE_UPCAST_H

#include "internal.h"

/* Columns of event_store.upcasters (1-based). */
#define Anum_upcasters_event_type		1
#define Anum_upcasters_from_version		2
#define Anum_upcasters_upcaster			3
#define Anum_upcasters_to_event_type	4
#define Natts_upcasters					4

/* An upcaster: a plain function (jsonb) RETURNS jsonb. */
extern const EsFunctionShape es_upcaster_shape;

/* upcast.c */
extern void es_upcast_event(Datum *values, bool *nulls);
extern int32 es_current_schema_version(text *event_type);
extern bool es_upcast_fingerprint(uint64 *fingerprint);

#endif							/* EVENT_STORE_UPCAST_H */
