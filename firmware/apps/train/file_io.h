// Whole-file reads and atomic writes for the host tools.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nmcm::host {

// False (and `error` set) if the file cannot be read.
bool read_file(const std::string& path, std::vector<uint8_t>* data, std::string* error);

// Writes to `path`.tmp then renames, so a reader never sees half a file.
bool write_file(const std::string& path, const void* data, size_t len, std::string* error);

}  // namespace nmcm::host
