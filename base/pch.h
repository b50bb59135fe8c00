// Precompiled header: the heavy LibTorch headers every translation unit needs (20 s a TU without it).
#pragma once
#include <torch/torch.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
