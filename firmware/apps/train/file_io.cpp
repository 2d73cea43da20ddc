#include "file_io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace nmcm::host {

bool read_file(const std::string& path, std::vector<uint8_t>* data, std::string* error) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *error = path + ": " + std::strerror(errno);
    return false;
  }
  data->clear();
  uint8_t chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0)
    data->insert(data->end(), chunk, chunk + got);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) *error = path + ": read error";
  return !failed;
}

bool write_file(const std::string& path, const void* data, size_t len, std::string* error) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    *error = tmp + ": " + std::strerror(errno);
    return false;
  }
  const bool wrote = std::fwrite(data, 1, len, f) == len;
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = path + ": write failed";
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace nmcm::host
