module github.com/heraldhq/herald/services/notifier

go 1.26.8
