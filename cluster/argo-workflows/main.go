// Command argo-workflows is the one-node cluster's Argo Workflows for the test rig: the workflow
// controller and the executor (argoexec) in one binary, built from Argo Workflows' published
// module at the version go.mod pins (see ../build.sh). The `argo` CLI is built apart (it embeds
// the web UI's files, which the module lacks).
//
// Usage: argo-workflows workflow-controller [flags...] | argoexec [...], or a link named after
// the component. The executor image holds this binary as /bin/argoexec: the init container copies
// it (os.Executable) into the pod, where it runs as /var/run/argo/argoexec.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/client-go/tools/clientcmd"

	argoexec "github.com/argoproj/argo-workflows/v4/cmd/argoexec/commands"
	wfclientset "github.com/argoproj/argo-workflows/v4/pkg/client/clientset/versioned"
	"github.com/argoproj/argo-workflows/v4/util"
	cmdutil "github.com/argoproj/argo-workflows/v4/util/cmd"
	argoerrors "github.com/argoproj/argo-workflows/v4/util/errors"
	"github.com/argoproj/argo-workflows/v4/workflow/controller"
)

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if name == "argo-workflows" && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	switch name {
	case "argoexec":
		os.Exit(runExecutor(args))
	case "workflow-controller":
		command := controllerCommand()
		command.SetArgs(args)
		if err := command.Execute(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "argo-workflows: unknown component %q (workflow-controller, argoexec)\n", name)
		os.Exit(2)
	}
}

// runExecutor runs argoexec and returns its exit code: a step's own exit code passes through
// (emissary runs the step's command as its child), anything else is 64, with Kubernetes'
// termination message saying why, as Argo's own executor reports it.
func runExecutor(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	command := argoexec.NewRootCommand()
	command.SetArgs(args)
	err := command.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exited argoerrors.Exited
	if errors.As(err, &exited) {
		if errors.Unwrap(err) != nil {
			util.WriteTerminateMessage(err.Error())
		}
		if code := exited.ExitCode(); code >= 0 {
			return code
		}
		return 137
	}
	util.WriteTerminateMessage(err.Error())
	fmt.Fprintln(os.Stderr, err)
	return 64
}

// controllerCommand is the workflow controller for one test cluster: one instance (no leader
// election), configured by the flags the rig needs.
func controllerCommand() *cobra.Command {
	var kubeconfig, namespace, configMap, executorImage, pullPolicy, logLevel string
	var glogLevel int
	command := &cobra.Command{
		Use:          "workflow-controller",
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer cancel()
			ctx, _, err := cmdutil.ContextWithLogger(c, logLevel, "text")
			if err != nil {
				return err
			}
			// Also what the pods' executors get as their --gloglevel (workflowpod.go).
			cmdutil.SetGLogLevel(glogLevel)
			config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			config.QPS, config.Burst = 50, 100
			kube := kubernetes.NewForConfigOrDie(config)
			workflows := wfclientset.NewForConfigOrDie(config)
			wfController, err := controller.NewWorkflowController(ctx, config, kube, workflows,
				namespace, "", executorImage, pullPolicy, "text", configMap, false, false)
			if err != nil {
				return err
			}
			go wfController.Run(ctx, 8, 2, 2, 2, 2)
			<-ctx.Done()
			return nil
		},
	}
	flags := command.Flags()
	flags.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster")
	flags.StringVar(&namespace, "namespace", "argo", "the controller's namespace (its ConfigMap's)")
	flags.StringVar(&configMap, "configmap", "workflow-controller-configmap", "the controller's ConfigMap")
	flags.StringVar(&executorImage, "executor-image", "", "the executor's image")
	flags.StringVar(&pullPolicy, "executor-image-pull-policy", "", "the executor image's pull policy")
	flags.StringVar(&logLevel, "loglevel", "info", "debug, info, warn or error")
	flags.IntVar(&glogLevel, "gloglevel", 0, "the Kubernetes client's log level")
	return command
}
