/*-------------------------------------------------------------------------
 *
 * dbhooks.c
 *	  What a backend's commands mean for the schedulers: a ProcessUtility
 *	  hook, installed when the library is preloaded.
 *
 * - DROP DATABASE, ALTER DATABASE ... RENAME and ... SET TABLESPACE need
 *	 the database to themselves.  PostgreSQL asks autovacuum workers to
 *	 leave, not background workers, so the backend that runs one of these
 *	 holds the database (no scheduler or task worker of ours starts there
 *	 until its transaction ends), asks our processes there to exit, and
 *	 waits for them a little, before the command itself waits for the
 *	 database to be free.  Only the database's owner (or a superuser) does
 *	 this: a command that will fail for want of privileges stops nothing.
 *	 A task stopped this way counts as a failed try, as after any kill.
 * - DROP EXTENSION (and DROP SCHEMA, DROP OWNED, which may take it with
 *	 them) wakes the database's scheduler at commit: it sees the extension
 *	 gone and leaves.
 * - CREATE DATABASE makes the launcher look at the databases again at
 *	 commit (a copy of a template with the extension has it too).  CREATE
 *	 EXTENSION tells it through check_setup(), which the install script
 *	 calls.
 * - CREATE, DROP and RENAME of a role: owners may need mapping (owners.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "orchestrator.h"

/* how long the backend waits for our processes to leave a database */
#define LEAVE_WAIT_MS		5000
#define LEAVE_POLL_MS		50

static ProcessUtility_hook_type prev_process_utility = NULL;

/* the database (name) a command needs to itself, or NULL */
static const char *
database_needed_alone(Node *stmt)
{
	if (IsA(stmt, DropdbStmt))
		return ((DropdbStmt *) stmt)->dbname;
	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		return ((RenameStmt *) stmt)->subname;
	if (IsA(stmt, AlterDatabaseStmt))
	{
		ListCell   *lc;

		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
				return ((AlterDatabaseStmt *) stmt)->dbname;
	}
	return NULL;
}

/* Clears database "name" of our processes, for its owner. */
static void
clear_database(const char *name)
{
	Oid			dboid = get_database_oid(name, true);

	if (!OidIsValid(dboid) || dboid == MyDatabaseId ||
		!pg_database_ownercheck(dboid, GetUserId()))
		return;
	registry_hold(dboid);
	for (int waited = 0; waited < LEAVE_WAIT_MS; waited += LEAVE_POLL_MS)
	{
		if (registry_signal_database(dboid) == 0)
			break;
		pg_usleep(LEAVE_POLL_MS * 1000L);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
orch_process_utility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	const char *alone = database_needed_alone(stmt);

	if (alone != NULL)
		clear_database(alone);
	else if ((IsA(stmt, DropStmt) &&
			  (((DropStmt *) stmt)->removeType == OBJECT_EXTENSION ||
			   ((DropStmt *) stmt)->removeType == OBJECT_SCHEMA)) ||
			 IsA(stmt, DropOwnedStmt))
		orch_wake_scheduler_at_commit();
	else if (IsA(stmt, CreatedbStmt))
		orch_poke_launcher_at_commit(InvalidOid);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (IsA(stmt, CreateRoleStmt) || IsA(stmt, DropRoleStmt) ||
		(IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_ROLE))
		owners_changed_at_commit();
}

static void
dbhooks_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		registry_release_holds();
}

void
dbhooks_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = orch_process_utility;
	RegisterXactCallback(dbhooks_xact_callback, NULL);
}
