/*-------------------------------------------------------------------------
 *
 * read_node.c
 *	  The scan node of FROM event_store.read_stream(...): the events go from
 *	  the stream scan to the executor one at a time, with no tuplestore.
 *
 * A set-returning function in FROM is a Function Scan, which collects every
 * row the function returns into a tuplestore before it hands out the first:
 * each event formed into a tuple, copied in, and read back and deformed
 * again.  For read_stream that was a tenth of the cost of a read, the whole
 * gap to a plain SELECT of the same rows.  So the planner hook below gives a
 * FROM item that is read_stream(...) alone (no WITH ORDINALITY, no ROWS
 * FROM of several functions, no whole-row reference to it) a Custom Scan
 * instead, which runs the same stream scan (es_read_stream_begin, the same
 * argument checks and errors) and stores each event in its slot as it is
 * presented.  The rows, their order and the errors are those of the
 * function; the function scan remains for every other use, and for all when
 * event_store.read_stream_node is off.
 *
 * What the function call would have done the node does too: it checks the
 * EXECUTE right on read_stream when the executor starts (as a function scan
 * does), and the plan depends on the function, so replacing or dropping it
 * invalidates cached plans.  A read_stream altered to run as SECURITY
 * DEFINER, with settings of its own (SET ...), STRICT or to another
 * signature keeps its function scan: the node could not switch identity or
 * settings around the scan, nor skip it as a strict call would.  So do
 * volatile arguments (a function scan evaluates them once, and reuses its
 * rows when rescanned with the same parameters; the node evaluates them, and
 * reads the stream, on each rescan).
 *
 * The node reads one event ahead of nothing: a LIMIT stops the scan, and each
 * event is presented (decrypted, upcast) when it is read.  A cursor is where
 * that could show: fetched row by row, in a transaction that registers an
 * upcaster or forgets a subject between fetches, later rows would follow the
 * change where a function scan presented them all at the first fetch; a
 * WITH HOLD cursor is run again from the start at commit, where a function
 * scan rewinds its rows; and a cursor declared without SCROLL scrolls only
 * where its plan can scan backwards, which the node cannot.  So a cursor
 * (DECLARE, PL/pgSQL's cursors: the planner is told, cursorOptions) keeps the
 * function scan, and the node serves everything else.  It is not run by
 * parallel workers (read_stream is PARALLEL RESTRICTED).
 *
 * The hook runs for every base relation the planner plans, in every
 * database of a server that preloads the library: for any other than a
 * function in FROM it returns at its first test, and it recognises
 * read_stream by the C symbol its pg_proc row names, which needs no catalog
 * of the extension (the database may not have it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/extensible.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/planner.h"
#include "optimizer/restrictinfo.h"
#include "parser/parsetree.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "read.h"

#define READ_STREAM_SYMBOL	"event_store_read_stream"
#define NODE_NAME			"event_store.read_stream"

bool		es_read_stream_node = true;

static set_rel_pathlist_hook_type prev_set_rel_pathlist_hook = NULL;
static planner_hook_type prev_planner_hook = NULL;

/* The cursorOptions of the statement being planned (read_node_planner). */
static int	planning_cursor_options = 0;

/* What a statement planned for a cursor has among its cursorOptions. */
#define CURSOR_OPTIONS (CURSOR_OPT_FAST_PLAN | CURSOR_OPT_SCROLL | CURSOR_OPT_NO_SCROLL | \
						CURSOR_OPT_HOLD | CURSOR_OPT_BINARY | CURSOR_OPT_INSENSITIVE)

/* The executor state: the scan, made at the first fetch (and again after a rescan). */
typedef struct ReadNodeState
{
	CustomScanState css;
	Oid			funcid;
	List	   *args;			/* ExprStates of read_stream's five arguments */
	MemoryContext scan_cxt;		/* the stream scan's memory, reset by a rescan */
	EsStreamScan *scan;
	bool		started;
} ReadNodeState;

static Plan *plan_read_node(PlannerInfo *root, RelOptInfo *rel, CustomPath *best_path,
							List *tlist, List *clauses, List *custom_plans);
static Node *create_read_node_state(CustomScan *cscan);
static void begin_read_node(CustomScanState *node, EState *estate, int eflags);
static TupleTableSlot *exec_read_node(CustomScanState *node);
static void end_read_node(CustomScanState *node);
static void rescan_read_node(CustomScanState *node);
static void explain_read_node(CustomScanState *node, List *ancestors, ExplainState *es);

static const CustomPathMethods read_path_methods = {
	.CustomName = NODE_NAME,
	.PlanCustomPath = plan_read_node,
};

static const CustomScanMethods read_scan_methods = {
	.CustomName = NODE_NAME,
	.CreateCustomScanState = create_read_node_state,
};

static const CustomExecMethods read_exec_methods = {
	.CustomName = NODE_NAME,
	.BeginCustomScan = begin_read_node,
	.ExecCustomScan = exec_read_node,
	.EndCustomScan = end_read_node,
	.ReScanCustomScan = rescan_read_node,
	.ExplainCustomScan = explain_read_node,
};

/*
 * Is funcid our read_stream: a C function whose symbol is read_stream's in
 * this library, of the five arguments and the composite result it was
 * created with, not strict, not SECURITY DEFINER and without settings of
 * its own?
 */
static bool
is_read_stream(Oid funcid)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ours = false;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tup))
		return false;
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prolang == ClanguageId && proc->proretset && !proc->prosecdef && !proc->proisstrict &&
		proc->pronargs == ES_READ_STREAM_NARGS &&
		proc->proargtypes.values[0] == TEXTOID && proc->proargtypes.values[1] == INT8OID &&
		proc->proargtypes.values[2] == INT4OID && proc->proargtypes.values[3] == BOOLOID &&
		proc->proargtypes.values[4] == TIMESTAMPTZOID &&
		get_typtype(proc->prorettype) == TYPTYPE_COMPOSITE &&
		heap_attisnull(tup, Anum_pg_proc_proconfig, NULL) &&
		!heap_attisnull(tup, Anum_pg_proc_probin, NULL))
	{
		bool		isnull;
		char	   *src = TextDatumGetCString(SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull));
		char	   *bin = TextDatumGetCString(SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &isnull));
		const char *base = strrchr(bin, '/');

		/* '$libdir/event_store', as MODULE_PATHNAME makes it, or a path to event_store.so */
		base = base ? base + 1 : bin;
		ours = strcmp(src, READ_STREAM_SYMBOL) == 0 &&
			strncmp(base, "event_store", 11) == 0 && (base[11] == '\0' || base[11] == '.');
		pfree(src);
		pfree(bin);
	}
	ReleaseSysCache(tup);
	return ours;
}

/*
 * Does the query refer to the function's row as a whole (FROM read_stream(...) e
 * ... SELECT e)?  The node's tuples are its columns only.
 */
static bool
uses_whole_row(RelOptInfo *rel)
{
	Bitmapset  *attrs = NULL;
	ListCell   *lc;

	pull_varattnos((Node *) rel->reltarget->exprs, rel->relid, &attrs);
	foreach(lc, rel->baserestrictinfo)
		pull_varattnos((Node *) lfirst_node(RestrictInfo, lc)->clause, rel->relid, &attrs);
	return bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, attrs);
}

/*
 * The planner hook: a FROM item that is read_stream(...) alone gets the node.
 */
static void
read_node_pathlist(PlannerInfo *root, RelOptInfo *rel, Index rti, RangeTblEntry *rte)
{
	RangeTblFunction *rtfunc;
	FuncExpr   *fexpr;
	TupleDesc	desc;
	bool		columns_ok;
	CustomPath *cpath;
	Path	   *fscan;

	if (prev_set_rel_pathlist_hook)
		prev_set_rel_pathlist_hook(root, rel, rti, rte);

	if (rte->rtekind != RTE_FUNCTION || !es_read_stream_node || rte->funcordinality ||
		list_length(rte->functions) != 1 || !IS_SIMPLE_REL(rel) || IS_DUMMY_REL(rel) ||
		list_length(rel->pathlist) != 1 || (planning_cursor_options & CURSOR_OPTIONS) != 0)
		return;
	rtfunc = linitial_node(RangeTblFunction, rte->functions);
	if (!IsA(rtfunc->funcexpr, FuncExpr))
		return;
	fexpr = (FuncExpr *) rtfunc->funcexpr;
	if (list_length(fexpr->args) != ES_READ_STREAM_NARGS || !is_read_stream(fexpr->funcid) ||
		contain_volatile_functions((Node *) fexpr->args))
		return;
	/* the columns the node produces: those of event_store.event, none dropped */
	desc = lookup_rowtype_tupdesc(fexpr->funcresulttype, -1);
	columns_ok = (desc->natts == Natts_event);
	for (int i = 0; columns_ok && i < desc->natts; i++)
		columns_ok = !TupleDescAttr(desc, i)->attisdropped;
	ReleaseTupleDesc(desc);
	if (!columns_ok || uses_whole_row(rel))
		return;

	fscan = linitial(rel->pathlist);
	cpath = makeNode(CustomPath);
	cpath->path.pathtype = T_CustomScan;
	cpath->path.parent = rel;
	cpath->path.pathtarget = rel->reltarget;
	cpath->path.param_info = fscan->param_info;
	cpath->path.parallel_aware = false;
	cpath->path.parallel_safe = false;
	cpath->path.parallel_workers = 0;
	cpath->path.rows = fscan->rows;
	/* the function scan's cost, without the wait for the last row before the first */
	cpath->path.startup_cost = 0;
	cpath->path.total_cost = fscan->total_cost;
	cpath->path.pathkeys = NIL;
	cpath->flags = CUSTOMPATH_SUPPORT_PROJECTION;	/* ExecScan projects */
	cpath->methods = &read_path_methods;
	rel->pathlist = NIL;
	add_path(rel, &cpath->path);
}

/*
 * The plan: a scan of no relation (scanrelid 0) whose tuples are the
 * function's columns, described by custom_scan_tlist; read_stream's
 * arguments in custom_exprs (where the planner turns lateral references
 * into parameters); the function's OID in custom_private.
 */
static Plan *
plan_read_node(PlannerInfo *root, RelOptInfo *rel, CustomPath *best_path,
			   List *tlist, List *clauses, List *custom_plans)
{
	RangeTblEntry *rte = planner_rt_fetch(rel->relid, root);
	FuncExpr   *fexpr = (FuncExpr *) linitial_node(RangeTblFunction, rte->functions)->funcexpr;
	CustomScan *cscan = makeNode(CustomScan);
	TupleDesc	desc = lookup_rowtype_tupdesc_copy(fexpr->funcresulttype, -1);
	List	   *scan_tlist = NIL;

	(void) custom_plans;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		scan_tlist = lappend(scan_tlist,
							 makeTargetEntry((Expr *) makeVar(rel->relid, i + 1, att->atttypid,
															  att->atttypmod, att->attcollation, 0),
											 i + 1, pstrdup(NameStr(att->attname)), false));
	}
	cscan->scan.plan.targetlist = tlist;
	cscan->scan.plan.qual = extract_actual_clauses(clauses, false);
	cscan->scan.scanrelid = 0;
	cscan->flags = best_path->flags;
	cscan->custom_plans = NIL;
	cscan->custom_exprs = copyObject(fexpr->args);
	cscan->custom_private = list_make1_oid(fexpr->funcid);
	cscan->custom_scan_tlist = scan_tlist;
	cscan->methods = &read_scan_methods;
	record_plan_function_dependency(root, fexpr->funcid);
	return &cscan->scan.plan;
}

static Node *
create_read_node_state(CustomScan *cscan)
{
	ReadNodeState *state = (ReadNodeState *) newNode(sizeof(ReadNodeState), T_CustomScanState);

	state->css.methods = &read_exec_methods;
	state->funcid = linitial_oid(cscan->custom_private);
	return (Node *) state;
}

/* What a function scan checks when it starts: the right to execute the function. */
static void
begin_read_node(CustomScanState *node, EState *estate, int eflags)
{
	ReadNodeState *state = (ReadNodeState *) node;
	CustomScan *cscan = (CustomScan *) node->ss.ps.plan;
	AclResult	acl;

	(void) eflags;
	acl = pg_proc_aclcheck(state->funcid, GetUserId(), ACL_EXECUTE);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(state->funcid));
	InvokeFunctionExecuteHook(state->funcid);
	state->args = ExecInitExprList(cscan->custom_exprs, &node->ss.ps);
	state->scan_cxt = AllocSetContextCreate(estate->es_query_cxt, "event_store read_stream node",
											ALLOCSET_DEFAULT_SIZES);
}

/*
 * Evaluate the arguments (in per-tuple memory, which ExecScan resets before
 * each fetch) and start the scan (in scan_cxt).
 */
static void
start_read(ReadNodeState *state)
{
	ExprContext *econtext = state->css.ss.ps.ps_ExprContext;
	Datum		args[ES_READ_STREAM_NARGS];
	bool		nulls[ES_READ_STREAM_NARGS];
	MemoryContext old;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, state->args)
	{
		args[i] = ExecEvalExprSwitchContext(lfirst(lc), econtext, &nulls[i]);
		i++;
	}
	old = MemoryContextSwitchTo(state->scan_cxt);
	if (!nulls[0])
		args[0] = PointerGetDatum(DatumGetTextPCopy(args[0]));
	state->scan = es_read_stream_begin(args, nulls, state->css.ss.ps.state->es_snapshot);
	MemoryContextSwitchTo(old);
	state->started = true;
}

static TupleTableSlot *
read_next(ScanState *ss)
{
	ReadNodeState *state = (ReadNodeState *) ss;
	TupleTableSlot *slot = ss->ss_ScanTupleSlot;
	EsStreamScan *s;

	if (!state->started)
		start_read(state);
	s = state->scan;
	ExecClearTuple(slot);
	if (s == NULL || !es_stream_scan_next(s))
		return slot;
	memcpy(slot->tts_values, s->values, sizeof(Datum) * Natts_event);
	memcpy(slot->tts_isnull, s->nulls, sizeof(bool) * Natts_event);
	return ExecStoreVirtualTuple(slot);
}

/*
 * A recheck of the row in the slot.  Since 15.15 (and 16.11, 17.7), an
 * EvalPlanQual recheck calls this only for a node that scans a relation or
 * a join, which this one does not; a query that rechecks rows copies the
 * function's row whole for it, which keeps the function scan.  Before, it
 * was called instead of fetching the next row for any scan of no relation,
 * in a subplan re-run for a recheck: there it fetches the next row.
 */
static bool
read_recheck(ScanState *ss, TupleTableSlot *slot)
{
	(void) slot;
	return !TupIsNull(read_next(ss));
}

static TupleTableSlot *
exec_read_node(CustomScanState *node)
{
	return ExecScan(&node->ss, read_next, read_recheck);
}

/* End the scan; the slot's values point into its memory, so it is emptied first. */
static void
stop_read(ReadNodeState *state)
{
	ExecClearTuple(state->css.ss.ss_ScanTupleSlot);
	if (state->scan != NULL)
		es_stream_scan_end(state->scan);
	state->scan = NULL;
	state->started = false;
	MemoryContextReset(state->scan_cxt);
}

static void
end_read_node(CustomScanState *node)
{
	stop_read((ReadNodeState *) node);
}

/* Note the cursorOptions of the statement while it is planned (read_node_pathlist). */
static PlannedStmt *
read_node_planner(Query *parse, const char *query_string, int cursor_options, ParamListInfo params)
{
	int			saved = planning_cursor_options;
	PlannedStmt *result;

	planning_cursor_options = cursor_options;
	PG_TRY();
	{
		if (prev_planner_hook)
			result = prev_planner_hook(parse, query_string, cursor_options, params);
		else
			result = standard_planner(parse, query_string, cursor_options, params);
	}
	PG_FINALLY();
	{
		planning_cursor_options = saved;
	}
	PG_END_TRY();
	return result;
}

/* A rescan (new lateral values or parameters) evaluates the arguments again. */
static void
rescan_read_node(CustomScanState *node)
{
	stop_read((ReadNodeState *) node);
	ExecScanReScan(&node->ss);
}

/* EXPLAIN VERBOSE: the call the node stands for, as a function scan shows it. */
static void
explain_read_node(CustomScanState *node, List *ancestors, ExplainState *es)
{
	ReadNodeState *state = (ReadNodeState *) node;
	CustomScan *cscan = (CustomScan *) node->ss.ps.plan;
	FuncExpr   *call;
	List	   *context;

	if (!es->verbose)
		return;
	call = makeFuncExpr(state->funcid, get_func_rettype(state->funcid), cscan->custom_exprs,
						InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	call->funcretset = true;
	context = set_deparse_context_plan(es->deparse_cxt, &cscan->scan.plan, ancestors);
	ExplainPropertyText("Function Call", deparse_expression((Node *) call, context, true, false), es);
}

void
es_read_node_init(void)
{
	DefineCustomBoolVariable("event_store.read_stream_node",
							 "Plans FROM event_store.read_stream(...) as a scan that hands out each event as it reads it.",
							 "Off: a function scan, which collects every event before it returns the first.",
							 &es_read_stream_node,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	RegisterCustomScanMethods(&read_scan_methods);
	prev_set_rel_pathlist_hook = set_rel_pathlist_hook;
	set_rel_pathlist_hook = read_node_pathlist;
	prev_planner_hook = planner_hook;
	planner_hook = read_node_planner;
}
