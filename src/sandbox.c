/*-------------------------------------------------------------------------
 *
 * sandbox.c
 *	  Running user code in a worker session that is the superuser's.
 *
 * Task workers are background workers connected as the bootstrap
 * superuser; the scheduler too.  They run two kinds of SQL: their own (as
 * the superuser, on the orchestrator catalog) and their users' (tasks and
 * callbacks, as the DAG's owner).  The rules, all kept here:
 *
 * 1. Our own SQL cannot be redirected.  From the first statement of the
 *	  process, the settings our queries depend on (search_path above all)
 *	  are pinned as the session's defaults, overriding whatever the
 *	  database's or a role's defaults say; a reload cannot change them.
 *
 * 2. User code runs as its owner, with exactly the owner's rights: a local
 *	  user id change, as in a SECURITY DEFINER function, so that SET ROLE,
 *	  SET SESSION AUTHORIZATION and their set_config() forms are refused (the
 *	  session user is a superuser, and a plain identity change would let
 *	  them through).  Superuser-only settings, LOAD, COPY PROGRAM, server
 *	  files and the like are checked against the owner, as in the owner's
 *	  own session.  LOAD is refused outright: a library stays loaded in the
 *	  worker after the task.  User code sees the database's defaults for
 *	  the pinned settings, as a session of the owner would.
 *
 * 3. Nothing user code queued runs after it as the superuser.  COMMIT runs
 *	  deferred triggers (constraint triggers, deferred unique and foreign
 *	  key checks) and the queries of WITH HOLD cursors; user code ends before
 *	  the worker records its outcome as the superuser in the same
 *	  transaction, so both are done before leaving the owner: deferred
 *	  triggers fire, and every cursor is closed, as the owner.  This is the
 *	  pattern behind CVE-2020-25695.
 *
 * 4. User code leaves nothing behind.  Every setting it changed (SET, SET
 *	  LOCAL, set_config(), RESET) is undone when it ends, as PostgreSQL's
 *	  own maintenance commands do around index expressions: it runs between
 *	  NewGUCNestLevel() and AtEOXact_GUC(false, ...), and an error aborts the
 *	  transaction, which undoes them too.  Then what DISCARD ALL would drop
 *	  goes: temporary objects, prepared statements, cursors, LISTEN, session
 *	  advisory locks, sequence state.  Cached plans stay: PostgreSQL checks
 *	  privileges at each execution and plans again when what a plan depends
 *	  on changes (a relation, the search_path, the role under row-level
 *	  security), and the workers' own statements keep theirs (dag.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"

#include "sandbox.h"

/*
 * The settings our own SQL relies on, and the value each is pinned to.
 * user_value is what the database gave the session before the pin: user
 * code runs with it.
 */
typedef struct PinnedSetting
{
	const char *name;
	const char *value;
	char	   *user_value;
} PinnedSetting;

static PinnedSetting pinned[] = {
	/* no schema a role can create objects in is ever searched */
	{"search_path", "pg_catalog, pg_temp", NULL},
	/* the claims and state changes are written for READ COMMITTED */
	{"default_transaction_isolation", "read committed", NULL},
	{"default_transaction_read_only", "off", NULL},
	/* our statements are short; a database default must not cancel them */
	{"statement_timeout", "0", NULL},
	{"lock_timeout", "0", NULL},
	{"idle_in_transaction_session_timeout", "0", NULL},
	{"transform_null_equals", "off", NULL},
	/* our triggers (events, artifact unlinks) always fire */
	{"session_replication_role", "origin", NULL},
};

/* whether user code is running, for the utility hook */
static int	user_depth = 0;
static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * LOAD stays in effect after the task (a library's hooks then see every
 * later task, and our own work): refused in user code.
 */
static void
sandbox_process_utility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	if (user_depth > 0 && IsA(pstmt->utilityStmt, LoadStmt))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("LOAD is not allowed in an orchestrator task"),
				 errdetail("A library loaded by a task would stay loaded in the worker after the task ends.")));
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * Pins our settings as the session's defaults.  Call once, right after
 * connecting, before any other statement.  PGC_S_OVERRIDE outranks the
 * configuration file and the database's and roles' settings, so neither a
 * reload nor ALTER DATABASE ... SET changes them; RESET returns to them.
 */
void
sandbox_pin_session(void)
{
	StartTransactionCommand();
	for (int i = 0; i < lengthof(pinned); i++)
	{
		const char *current = GetConfigOptionByName(pinned[i].name, NULL, false);

		pinned[i].user_value = MemoryContextStrdup(TopMemoryContext, current);
		SetConfigOption(pinned[i].name, pinned[i].value, PGC_SUSET, PGC_S_OVERRIDE);
	}
	CommitTransactionCommand();

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = sandbox_process_utility;
}

/*
 * Becomes the owner, for user code, in the current transaction.  Settings
 * changed from here on are undone by sandbox_leave() or by the
 * transaction's abort.
 */
void
sandbox_enter(UserScope *scope, Oid owner)
{
	Assert(IsTransactionState());
	scope->owner = owner;
	scope->nestlevel = NewGUCNestLevel();
	for (int i = 0; i < lengthof(pinned); i++)
		(void) set_config_option(pinned[i].name, pinned[i].user_value,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET,
								 true, 0, false);
	GetUserIdAndSecContext(&scope->save_userid, &scope->save_sec_context);
	SetUserIdAndSecContext(owner,
						   scope->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	user_depth++;
}

/*
 * Ends user code that completed: what the commit would run of it runs now,
 * still as the owner, then its settings are undone and the superuser is
 * back.  (On error, the transaction's abort does all of this instead, and
 * runs none of the user's pending work.)
 */
void
sandbox_leave(UserScope *scope)
{
	Assert(GetUserId() == scope->owner);

	/*
	 * As CommitTransaction does: deferred triggers, then the portals (a
	 * trigger may open a cursor; closing one runs no user code, but fire
	 * again in case).
	 */
	AfterTriggerFireDeferred();
	PortalHashTableDeleteAll();
	AfterTriggerFireDeferred();

	user_depth--;
	AtEOXact_GUC(false, scope->nestlevel);
	SetUserIdAndSecContext(scope->save_userid, scope->save_sec_context);
}

/*
 * Drops what DISCARD ALL would but plans, as the superuser, in the current
 * transaction (a temporary object's drop runs no user code).  Call after
 * each piece of user code, whether it succeeded or its transaction was
 * rolled back: prepared statements, session advisory locks and sequence
 * state survive a rollback.
 */
void
sandbox_reset_session(void)
{
	Assert(IsTransactionState());
	user_depth = 0;
	ResetTempTableNamespace();
	PortalHashTableDeleteAll();
	DropAllPreparedStatements();
	Async_UnlistenAll();
	LockReleaseSession(USER_LOCKMETHOD);
	ResetSequenceCaches();
}
