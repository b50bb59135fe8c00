// The subcommands of `affinage`. Each parses its own options (Boost.Program_options) and returns an exit
// code; library errors propagate as affinage::Error and are printed once by main().
#pragma once
#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace affinage::cli {

using Args = std::vector<std::string>;  // the arguments after the subcommand name

int cmd_generate(const Args& args);
int cmd_tokenize(const Args& args);
int cmd_eval(const Args& args);
int cmd_inspect(const Args& args);
int cmd_run(const Args& args);
int cmd_data(const Args& args);
int cmd_data_check(const Args& args);  // `affinage data check` (cli/cmd_data_check.cpp)
int cmd_merge(const Args& args);
int cmd_publish(const Args& args);
int cmd_report(const Args& args);
int cmd_recipes(const Args& args);

// Parses `args` against `opts` (+ positional); prints help and returns true when --help was given.
// Unknown options and missing values are errors that name the option.
bool parse_args(const Args& args, const std::string& usage, boost::program_options::options_description& opts,
                boost::program_options::variables_map& vm,
                const boost::program_options::positional_options_description* pos = nullptr);

}  // namespace affinage::cli
