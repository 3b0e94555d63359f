"""The command-line programs: ``kjcore`` (:mod:`~kjcore.commands.main`), ``kjexec``
(:mod:`~kjcore.commands.kjexec`) and the demo (:mod:`~kjcore.commands.demo`), with the
grammars they share (:mod:`~kjcore.commands.grammar`)."""
