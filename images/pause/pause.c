/*
 * The pod sandbox ("pause") process: PID 1 of every pod's infrastructure container. It holds the
 * pod's namespaces open, reaps zombie children (pods that share a PID namespace make it their
 * init), and exits cleanly on SIGINT or SIGTERM. Built static (`gcc -static -Os`) so the image
 * holds this one file and nothing else.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "dev"
#endif

static void say(int fd, const char *text) {
    ssize_t ignored = write(fd, text, strlen(text));
    (void)ignored;
}

static void on_stop(int signo) {
    (void)signo;
    _exit(0);
}

static void on_child(int signo) {
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signo, void (*handler)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            say(1, "pause " VERSION "\n");
            return 0;
        }
    }
    if (getpid() != 1) {
        say(2, "pause: warning: not running as PID 1\n");
    }
    if (handle(SIGINT, on_stop, 0) < 0 || handle(SIGTERM, on_stop, 0) < 0 ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
        say(2, "pause: cannot install signal handlers\n");
        return 1;
    }
    for (;;) {
        pause();
    }
}
