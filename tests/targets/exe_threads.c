/*
 * Target for `exe` with threads: a worker thread locks an error-checking mutex and counts; main counts and,
 * once it finds itself with another parent or PID than it started with (resumed from an executable), sends
 * the worker SIGUSR1 with pthread_kill and tells the worker to unlock its mutex.
 * Prints "ready pid=..", "worker tid=T" (the worker's TID, again after the resume), "kill rc=R" (pthread_kill's
 * return), "handler tid=T" (the TID of the thread the handler ran in), "unlock rc=R" (the worker's
 * pthread_mutex_unlock of the mutex it locked before the dump), and "tick main N" / "tick worker N".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

static pthread_mutex_t held;
static pthread_t worker;
static volatile sig_atomic_t unlock_now;

static void on_usr1(int sig)
{
	(void)sig;
	say("handler tid=%d\n", gettid());
}

static void pause_20ms(void)
{
	struct timespec twenty_ms = { 0, 20000000 };

	nanosleep(&twenty_ms, NULL);
}

static void *work(void *arg)
{
	pid_t started = getpid(), parent = getppid();
	long n = 0;

	(void)arg;
	pthread_mutex_lock(&held);
	say("worker tid=%d\n", gettid());
	for (;;) {
		pause_20ms();
		if (getppid() != parent || getpid() != started) {
			parent = getppid();
			started = getpid();
			say("worker tid=%d\n", gettid());
		}
		if (unlock_now == 1) {
			unlock_now = 2;
			say("unlock rc=%d\n", pthread_mutex_unlock(&held));
		}
		say("tick worker %ld\n", ++n);
	}
	return NULL;
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	pthread_mutexattr_t attr;
	pid_t started = getpid(), parent = getppid();
	long n = 0;

	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&held, &attr);
	if (sigaction(SIGUSR1, &sa, NULL) || pthread_create(&worker, NULL, work, NULL))
		return 1;
	say("ready pid=%d\n", started);
	for (;;) {
		pause_20ms();
		if (getppid() != parent || getpid() != started) {
			parent = getppid();
			started = getpid();
			pause_20ms(); /* the worker says its new TID first */
			say("kill rc=%d\n", pthread_kill(worker, SIGUSR1));
			unlock_now = 1;
		}
		say("tick main %ld\n", ++n);
	}
}
