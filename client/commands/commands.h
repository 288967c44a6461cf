// The groups of i2s_client's subcommands, one file each in commands/:
//   embed.cc    embed (and the embedding the others build on: embed.h)
//   jobs.cc     jobs ls / get / watch / cancel
//   latents.cc  latents ls / get / rm / export / import
//   edits.cc    synth, morph, stylemix, expression
//   local_edits.cc  blend (Image2StyleGAN++'s local edit)
//   directions.cc   directions ls / import / compute / get / rm / frames, and edit
//   align.cc    align
//   paste.cc    paste
//   server.cc   info, usage, health
// Each Add* adds its subcommands to `app` (flags bound to the returned group) and
// registers their handlers in `ctx`; the group must outlive the parse and the handler.
#ifndef I2S_CLIENT_COMMANDS_COMMANDS_H_
#define I2S_CLIENT_COMMANDS_COMMANDS_H_

#include <CLI/CLI.hpp>
#include <memory>

#include "client/commands/command_group.h"
#include "client/commands/embed.h"
#include "client/context.h"

namespace i2s::client::cli {

// `jobs watch` follows and reports through `embed`.
std::unique_ptr<CommandGroup> AddJobsCommands(CLI::App& app, Context& ctx, EmbedCommand& embed);
std::unique_ptr<CommandGroup> AddLatentsCommands(CLI::App& app, Context& ctx);
// Latents given as files are imported or embedded through `embed`.
std::unique_ptr<CommandGroup> AddEditCommands(CLI::App& app, Context& ctx, EmbedCommand& embed);
// Latents given as files are imported or embedded through `embed`.
std::unique_ptr<CommandGroup> AddLocalEditCommands(CLI::App& app, Context& ctx,
                                                   EmbedCommand& embed);
// Latents given as files are imported or embedded through `embed`.
std::unique_ptr<CommandGroup> AddDirectionCommands(CLI::App& app, Context& ctx,
                                                   EmbedCommand& embed);
std::unique_ptr<CommandGroup> AddAlignCommand(CLI::App& app, Context& ctx);
// Latents given as files are imported through `embed`.
std::unique_ptr<CommandGroup> AddPasteCommand(CLI::App& app, Context& ctx, EmbedCommand& embed);
std::unique_ptr<CommandGroup> AddServerCommands(CLI::App& app, Context& ctx);

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_COMMANDS_COMMANDS_H_
