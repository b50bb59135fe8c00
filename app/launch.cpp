// `affinage run --nproc K`: torchrun's job for one machine, for users without it. Starts K copies of this
// program with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, waits for
// all of them, and stops the rest as soon as one fails.
#include "app/launch.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include "base/error.h"

namespace affinage {

// A TCP port that is free on the loopback interface right now (the kernel picks it).
static int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("cannot open a socket to find a free port; set MASTER_PORT and launch with torchrun instead");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    fail("cannot find a free port on 127.0.0.1; set MASTER_PORT and launch with torchrun instead");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

int launch_local_ranks(int nproc, const std::vector<std::string>& child_args) {
  if (nproc < 1) fail("--nproc must be at least 1");
  if (std::getenv("WORLD_SIZE")) fail("--nproc starts its own processes; under torchrun or srun leave it out");
  const char* port_env = std::getenv("MASTER_PORT");
  const std::string port = port_env ? port_env : std::to_string(free_port());
  std::vector<std::string> argv_s{"/proc/self/exe", "run"};
  argv_s.insert(argv_s.end(), child_args.begin(), child_args.end());
  std::map<pid_t, int> ranks;
  for (int k = 0; k < nproc; ++k) {
    pid_t pid = ::fork();
    if (pid < 0) fail("cannot start process ", k, " of ", nproc);
    if (pid == 0) {
      ::setenv("RANK", std::to_string(k).c_str(), 1), ::setenv("LOCAL_RANK", std::to_string(k).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1),
          ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1), ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::perror("affinage run --nproc: exec");
      ::_exit(127);
    }
    ranks[pid] = k;
  }
  int rc = 0;
  while (!ranks.empty()) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) break;
    auto it = ranks.find(pid);
    if (it == ranks.end()) continue;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    int rank = it->second;
    ranks.erase(it);
    if (code != 0 && rc == 0) {
      rc = code;
      std::cerr << "affinage run: rank " << rank << " of " << nproc << " failed (exit status " << code
                << "); stopping the other ranks\n";
      for (auto& [p, r] : ranks) ::kill(p, SIGTERM);
    }
  }
  return rc;
}

}  // namespace affinage
